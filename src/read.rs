//! Read: an export file -> raw records with their physical line. The thin IO layer over the
//! csv crate; cells stay bytes so UTF-8 is judged per cell by the map stage.

use std::fs::File;
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
    #[error("{path}: the header line is not valid UTF-8; export the file as UTF-8")]
    HeaderNotUtf8 { path: PathBuf },
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
    reader: csv::Reader<File>,
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
            .from_reader(file);
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
        let header = raw
            .iter()
            .map(|h| std::str::from_utf8(h).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ReadError::HeaderNotUtf8 {
                path: path.to_path_buf(),
            })?;
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
        self.reader
            .read_byte_record(record)
            .map_err(|source| ReadError::Csv {
                path: self.path.clone(),
                line: self.reader.position().line(),
                source,
            })
    }
}

/// The 1-based physical line where `record` starts (the header is line 1).
pub fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}
