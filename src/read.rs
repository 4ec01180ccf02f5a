//! Read: an export file -> raw records with their physical line. The thin IO layer over the
//! csv crate; cells stay bytes so UTF-8 is judged per cell by the map stage.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty: an export needs at least a header line")]
    Empty { path: PathBuf },
    #[error("{path}: read failed near line {line}: {source}")]
    Csv {
        path: PathBuf,
        line: u64,
        source: csv::Error,
    },
}

/// One export file open for streaming; memory stays one record whatever the file size.
pub struct Export {
    path: PathBuf,
    reader: csv::Reader<CrlfToLf<File>>,
    header: Vec<String>,
    size: u64,
}

impl Export {
    pub fn open(path: &Path, delimiter: u8) -> Result<Export, ReadError> {
        let open_err = |source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true) // ragged rows become `malformed` rows with a line, not errors
            .buffer_capacity(1 << 16)
            .from_reader(CrlfToLf::new(file));
        let raw = reader.byte_headers().map_err(|source| ReadError::Csv {
            path: path.to_path_buf(),
            line: 1,
            source,
        })?;
        if raw.iter().all(|h| h.iter().all(u8::is_ascii_whitespace)) {
            return Err(ReadError::Empty {
                path: path.to_path_buf(),
            });
        }
        // Lossy: a stray byte in an unmapped header must not refuse the file; a mapped header
        // with one no longer matches and is reported as missing, with the headers found.
        let header = raw
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        Ok(Export {
            path: path.to_path_buf(),
            reader,
            header,
            size,
        })
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// File size in bytes, for progress.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes consumed so far, for progress.
    pub fn offset(&self) -> u64 {
        self.reader.position().byte()
    }

    /// Reads the next record into `record` (reused to avoid an allocation per row).
    /// `Ok(false)` at the end of the file.
    pub fn next_record(&mut self, record: &mut ByteRecord) -> Result<bool, ReadError> {
        let more = self
            .reader
            .read_byte_record(record)
            .map_err(|source| ReadError::Csv {
                path: self.path.clone(),
                line: self.reader.position().line(),
                source,
            })?;
        if more {
            self.place_after_blank_lines(record);
        }
        Ok(more)
    }

    /// csv gives a record the position where it started looking for it, which is the first
    /// of the blank lines it skips before the record, not the record's own line. The record's
    /// first line is the line after its last one, less the line breaks inside its cells and
    /// the one that ends it. Every record ends with a line break ([`CrlfToLf`] ends the input
    /// with one) but a record that the end of the input ended inside a quoted cell.
    fn place_after_blank_lines(&self, record: &mut ByteRecord) {
        let Some(start) = record.position() else {
            return;
        };
        let next = self.reader.position().line();
        if next <= start.line() + 1 {
            return; // one line, nothing skipped: the common case costs no scan
        }
        let inside = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        let end = u64::from(!self.reader.get_ref().at_end());
        let line = next.saturating_sub(inside + end);
        if line > start.line() {
            let mut at = start.clone();
            at.set_line(line);
            record.set_position(Some(at));
        }
    }
}

/// The 1-based physical line where `record` starts (the header is line 1).
pub fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// Turns CRLF, and a lone CR, into LF before the csv parser sees it, and ends input that does
/// not end with a line break with one, so that every record ends with a line break. csv 1.4 counts a
/// CRLF-terminated record's start one line early (the `\n` of the previous terminator is
/// read as part of the next record), and it counts lines by `\n` only, so in an export with
/// CR line ends (classic Mac) every record was "line 1"; `line` in the report must be the
/// physical line. As a side effect, a CRLF or CR inside a quoted cell reads as LF, so CRLF,
/// CR and LF exports of the same data diff as equal.
pub struct CrlfToLf<R> {
    inner: BufReader<R>,
    /// The last byte read was a CR (already given out as LF): an LF right after it is the
    /// same line end.
    after_cr: bool,
    /// The last byte given out, if any: at the end of the input, anything but LF gets one.
    last: Option<u8>,
    /// The end of the input was reached (`read` returned 0).
    at_end: bool,
}

impl<R: Read> CrlfToLf<R> {
    pub fn new(inner: R) -> Self {
        CrlfToLf {
            inner: BufReader::with_capacity(1 << 16, inner),
            after_cr: false,
            last: None,
            at_end: false,
        }
    }

    /// Whether the end of the input was reached: the csv parser then ends a record whose
    /// quoted cell was still open.
    pub fn at_end(&self) -> bool {
        self.at_end
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if self.last.is_some_and(|b| b != b'\n') {
                    self.last = Some(b'\n');
                    out[0] = b'\n';
                    return Ok(1);
                }
                self.at_end = true;
                return Ok(0);
            }
            let mut written = 0;
            let mut consumed = 0;
            // Copies runs without a CR whole (memchr finds the next one): a byte-at-a-time
            // loop here cost as much as the csv parser itself on a warm night.
            while consumed < buf.len() && written < out.len() {
                if std::mem::take(&mut self.after_cr) && buf[consumed] == b'\n' {
                    consumed += 1; // the LF of a CRLF
                    continue;
                }
                let take = (buf.len() - consumed).min(out.len() - written);
                let chunk = &buf[consumed..consumed + take];
                let run = memchr::memchr(b'\r', chunk).unwrap_or(take);
                out[written..written + run].copy_from_slice(&chunk[..run]);
                written += run;
                consumed += run;
                if run < take {
                    out[written] = b'\n';
                    written += 1;
                    consumed += 1;
                    self.after_cr = true;
                }
            }
            self.inner.consume(consumed);
            // Only the LF of a CRLF was consumed: 0 would mean end of file, so read on.
            if written > 0 {
                self.last = Some(out[written - 1]);
                return Ok(written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = CrlfToLf::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn crlf_and_lone_cr_become_lf() {
        for chunk in [1, 2, 3, 64] {
            assert_eq!(through(b"a,b\r\n1,2\r\n", chunk), b"a,b\n1,2\n");
            assert_eq!(through(b"a\rb\r", chunk), b"a\nb\n");
            assert_eq!(through(b"\r\r\n", chunk), b"\n\n");
            assert_eq!(through(b"\n\r\n\r\r", chunk), b"\n\n\n\n");
            assert_eq!(through(b"", chunk), b"");
            // The input always ends with a line break.
            assert_eq!(through(b"a,b", chunk), b"a,b\n");
            assert_eq!(through(b"a,b\r", chunk), b"a,b\n");
            assert_eq!(through(b"\xef\xbb\xbf", chunk), b"\xef\xbb\xbf\n");
        }
    }

    /// A reader that hands out at most `step` bytes a call, so a CR and its LF can fall into
    /// two fills of the inner buffer.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.bytes.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// What the folding must give: CRLF, then lone CRs, as LF; a line break at the end.
    fn model(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    out.push(b'\n');
                    i += 2;
                }
                b'\r' => {
                    out.push(b'\n');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn folding_line_ends_matches_the_model_at_any_read_sizes(
            input in proptest::collection::vec(proptest::sample::select(b"ab,\r\n\"".to_vec()), 0..300),
            step in 1usize..8,
            chunk in 1usize..8,
        ) {
            let mut r = CrlfToLf::new(Trickle { bytes: &input, step });
            let mut out = Vec::new();
            let mut buf = vec![0; chunk];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            proptest::prop_assert_eq!(out, model(&input));
        }
    }

    fn lines(bytes: &[u8]) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, bytes).unwrap();
        let mut export = Export::open(&path, b',').unwrap();
        let mut record = ByteRecord::new();
        let mut lines = Vec::new();
        while export.next_record(&mut record).unwrap() {
            lines.push(line_of(&record));
        }
        lines
    }

    #[test]
    fn lines_are_physical_after_blank_lines() {
        // line 1 a,b | 2, 3 blank | 4 1,2 | 5 blank | 6-8 3,"x..y" | 9, 10 blank | 11 5,6
        let text = b"a,b\n\n\n1,2\n\n3,\"x\n\ny\"\n\n\n5,6";
        assert_eq!(lines(text), [4, 6, 11]);
        assert_eq!(lines(&[text.as_slice(), b"\n\n"].concat()), [4, 6, 11]);
        let crlf = String::from_utf8_lossy(text).replace('\n', "\r\n");
        assert_eq!(lines(crlf.as_bytes()), [4, 6, 11]);
        let cr = String::from_utf8_lossy(text).replace('\n', "\r");
        assert_eq!(lines(cr.as_bytes()), [4, 6, 11]);
        // Blank lines before the header, and a whitespace-only line, which is a record.
        assert_eq!(lines(b"\n\na,b\n \n\n1,2\n"), [4, 6]);
        // A quote left open to the end of the file, after blank lines, with and without a
        // final line break: the record starts at line 4.
        assert_eq!(lines(b"a,b\n1,2\n\n3,\"x\ny\n"), [2, 4]);
        assert_eq!(lines(b"a,b\n1,2\n\n3,\"x\ny"), [2, 4]);
        assert_eq!(lines(b"a,b\n1,\"x\ny\n"), [2]);
    }

    #[test]
    fn lines_are_physical_with_cr_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        // Classic Mac line ends, a quoted cell over two lines, and a last line without one.
        std::fs::write(&path, b"a,b\r1,2\r3,\"x\ry\"\r5,6").unwrap();
        let mut export = Export::open(&path, b',').unwrap();
        assert_eq!(export.header(), ["a", "b"]);
        let mut record = ByteRecord::new();
        let mut lines = Vec::new();
        while export.next_record(&mut record).unwrap() {
            lines.push((line_of(&record), record.get(1).unwrap().to_vec()));
        }
        let cell = |s: &[u8]| s.to_vec();
        assert_eq!(
            lines,
            [(2, cell(b"2")), (3, cell(b"x\ny")), (5, cell(b"6"))]
        );
    }

    #[test]
    fn lines_are_physical_with_crlf_bom_and_multiline_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, b"\xef\xbb\xbfa,b\r\n1,\"x\r\ny\"\r\n3,4\r\n").unwrap();
        let mut export = Export::open(&path, b',').unwrap();
        assert_eq!(export.header(), ["a", "b"]);
        let mut record = ByteRecord::new();
        let mut lines = Vec::new();
        while export.next_record(&mut record).unwrap() {
            lines.push(line_of(&record));
        }
        assert_eq!(lines, [2, 4]);
    }
}
