//! Map: one CSV record + the column map -> the account's normalized values (CONTRACT §3).
//! **No IO here**: the reader hands over raw bytes so that a bad byte in one cell becomes a
//! `malformed` row with its line instead of killing the run.

use chrono::{Datelike, NaiveDate};
use csv::ByteRecord;

use crate::config::Columns;
use crate::model::{ADDRESS_PREFIX, CUSTOM_PREFIX, Fields, Problem, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error(
        "the header has no column {} (mapped by {}); headers found: {}",
        .missing.iter().map(|(_, h)| format!("{h:?}")).collect::<Vec<_>>().join(", "),
        .missing.iter().map(|(k, _)| format!("[columns] {k}")).collect::<Vec<_>>().join(", "),
        .found
    )]
    MissingColumns {
        /// (config key, header) pairs.
        missing: Vec<(String, String)>,
        /// The file's headers as [`show_headers`] lists them.
        found: String,
    },
    #[error(
        "the header has the mapped column {header:?} {count} times; rename the extra ones in the export"
    )]
    AmbiguousHeader { header: String, count: usize },
}

/// An error lists at most this many of a file's headers, each cut to [`HEADER_CHARS`]
/// characters: a 5,000-column export, or a 100 MB line without a newline read as one
/// header, must not become an error line of that size on stderr and in the journal.
const HEADERS_SHOWN: usize = 50;
const HEADER_CHARS: usize = 60;

/// Headers quoted for an error message: `"Ref", "Email"`, a long one cut
/// (`"xxx…" (104857600 bytes)`), and `and 4950 more` past [`HEADERS_SHOWN`].
pub fn show_headers(headers: &[String]) -> String {
    let mut list: Vec<String> = headers
        .iter()
        .take(HEADERS_SHOWN)
        .map(|h| match h.char_indices().nth(HEADER_CHARS) {
            None => format!("{h:?}"),
            Some((cut, _)) => format!("{:?}… ({} bytes)", &h[..cut], h.len()),
        })
        .collect();
    if headers.len() > HEADERS_SHOWN {
        list.push(format!("and {} more", headers.len() - HEADERS_SHOWN));
    }
    list.join(", ")
}

/// The headers (trimmed) that no `[columns]` entry names, in file order. Needs no
/// [`Layout`], so `check-config` can list them when the layout cannot be resolved: when a
/// mapped header is missing, these are where its misspelling hides.
pub fn unread_headers(columns: &Columns, header: &[String]) -> Vec<String> {
    let mapped: std::collections::BTreeSet<&str> = std::iter::once(&columns.accountreference)
        .chain(columns.fields.values())
        .chain(columns.addresses.values().flat_map(|m| m.values()))
        .chain(columns.customparameters.values())
        .map(String::as_str)
        .collect();
    header
        .iter()
        .map(|h| h.trim())
        .filter(|h| !mapped.contains(h))
        .map(str::to_owned)
        .collect()
}

/// How a column's cell becomes an API value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Trimmed text, as is.
    Text,
    /// Trimmed and lowercased (status, gender, email).
    Lower,
    Phone,
    Bool,
    Date,
}

impl Kind {
    fn of_field(field: &str) -> Kind {
        match field {
            "status" | "gender" | "email" => Kind::Lower,
            "phonenumber" | "mobilenumber" => Kind::Phone,
            "verified" | "marketingallowed" => Kind::Bool,
            "dateofbirth" => Kind::Date,
            _ => Kind::Text,
        }
    }
}

#[derive(Clone, Debug)]
struct Column {
    index: usize,
    header: String,
    path: String,
    kind: Kind,
}

/// The column map resolved against one file's header, computed once per file.
#[derive(Clone, Debug)]
pub struct Layout {
    width: usize,
    reference: usize,
    reference_header: String,
    columns: Vec<Column>,
    address_types: Vec<String>,
}

impl Layout {
    /// Finds every mapped header. Headers match after trimming, case-sensitively.
    pub fn resolve(columns: &Columns, header: &[String]) -> Result<Layout, MapError> {
        let mut wanted: Vec<(String, String, String, Kind)> = Vec::new(); // key, header, path, kind
        for (field, h) in &columns.fields {
            wanted.push((
                field.clone(),
                h.clone(),
                field.clone(),
                Kind::of_field(field),
            ));
        }
        for (kind, map) in &columns.addresses {
            for (field, h) in map {
                let path = format!("{ADDRESS_PREFIX}{kind}.{field}");
                wanted.push((path.clone(), h.clone(), path, Kind::Text));
            }
        }
        for (name, h) in &columns.customparameters {
            let path = format!("{CUSTOM_PREFIX}{name}");
            wanted.push((path.clone(), h.clone(), path, Kind::Text));
        }

        let trimmed: Vec<&str> = header.iter().map(|h| h.trim()).collect();
        let find = |h: &str| -> Result<Option<usize>, MapError> {
            let hits: Vec<usize> = (0..trimmed.len()).filter(|&i| trimmed[i] == h).collect();
            match hits.as_slice() {
                [] => Ok(None),
                [i] => Ok(Some(*i)),
                _ => Err(MapError::AmbiguousHeader {
                    header: h.to_owned(),
                    count: hits.len(),
                }),
            }
        };

        let mut missing = Vec::new();
        let reference = find(&columns.accountreference)?;
        if reference.is_none() {
            missing.push((
                "accountreference".to_owned(),
                columns.accountreference.clone(),
            ));
        }
        let mut resolved = Vec::new();
        for (key, h, path, kind) in wanted {
            match find(&h)? {
                Some(index) => resolved.push(Column {
                    index,
                    header: h,
                    path,
                    kind,
                }),
                None => missing.push((key, h)),
            }
        }
        match reference {
            Some(reference) if missing.is_empty() => Ok(Layout {
                width: header.len(),
                reference,
                reference_header: columns.accountreference.clone(),
                columns: resolved,
                address_types: columns.addresses.keys().cloned().collect(),
            }),
            _ => Err(MapError::MissingColumns {
                missing,
                found: show_headers(header),
            }),
        }
    }

    /// Headers no column reads: what `check-config` lists so an operator notices a CRM
    /// column that could be mapped, or a renamed one.
    pub fn unmapped<'h>(&self, header: &'h [String]) -> Vec<&'h str> {
        header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.reference && !self.columns.iter().any(|c| c.index == *i))
            .map(|(_, h)| h.as_str())
            .collect()
    }

    /// The mapped addresstypes, which the diff needs to rebuild whole `addresses` arrays.
    pub fn address_types(&self) -> &[String] {
        &self.address_types
    }

    /// The trimmed reference cell, when the row has one that is valid UTF-8. Used by the
    /// duplicate scan, which must not pay for a full mapping. A row with the wrong number
    /// of fields still names its account here: its other row must not be sent as if alone
    /// (CONTRACT §4), even if the reference cell of a ragged row may be shifted.
    pub fn reference<'r>(&self, record: &'r ByteRecord) -> Option<&'r str> {
        std::str::from_utf8(record.get(self.reference)?)
            .ok()
            .map(str::trim)
    }
}

/// One record after mapping. `problems` holds what normalizing found (bad booleans, dates)
/// or, for a malformed row, only the malformed problems: its cells cannot be trusted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapped {
    pub reference: Option<String>,
    pub fields: Fields,
    pub problems: Vec<Problem>,
    pub malformed: bool,
}

/// Bumped whenever a normalize rule changes (2: four-digit years, spaces of any width in
/// phones). It salts the row digests, so a row last seen under other rules is mapped again
/// instead of being answered "unchanged" from the row index.
pub const RULES_REVISION: u32 = 2;

/// Maps and normalizes one record.
pub fn map_record(layout: &Layout, record: &ByteRecord, date_formats: &[String]) -> Mapped {
    let cell = |i: usize| record.get(i).map(std::str::from_utf8);
    let reference = match cell(layout.reference) {
        Some(Ok(s)) => Some(s.trim().to_owned()),
        _ => None,
    };
    if record.len() != layout.width {
        let mut message = format!(
            "row has {} fields but the header has {}",
            record.len(),
            layout.width
        );
        // A quote that is never closed takes every line after it into one cell, up to the
        // next quote or the end of the file: one malformed row stands for all of them, and
        // the data team must see that those lines were not read as rows.
        // A newline that ends the cell is the file's last line end, taken in by the quote.
        let cells = record.as_slice();
        let cells = cells.strip_suffix(b"\n").unwrap_or(cells);
        let lines = 1 + cells.iter().filter(|&&b| b == b'\n').count();
        if lines > 1 {
            message.push_str(&format!(
                " (this row spans {lines} lines: a quote that is not closed takes in the lines after it)"
            ));
        }
        return Mapped {
            reference,
            problems: vec![Problem::malformed("", message)],
            malformed: true,
            ..Mapped::default()
        };
    }

    let mut out = Mapped {
        reference,
        ..Mapped::default()
    };
    if matches!(cell(layout.reference), Some(Err(_))) {
        out.problems.push(Problem::malformed(
            "accountreference",
            format!("column {:?} is not valid UTF-8", layout.reference_header),
        ));
    }
    for col in &layout.columns {
        match cell(col.index) {
            Some(Ok(raw)) => match normalize(col.kind, &col.path, raw, date_formats) {
                Ok(Some(v)) => {
                    out.fields.insert(col.path.clone(), v);
                }
                Ok(None) => {}
                Err(p) => out.problems.push(p),
            },
            _ => out.problems.push(Problem::malformed(
                col.path.clone(),
                format!("column {:?} is not valid UTF-8", col.header),
            )),
        }
    }
    if out
        .problems
        .iter()
        .any(|p| p.category == crate::model::Category::Malformed)
    {
        out.problems
            .retain(|p| p.category == crate::model::Category::Malformed);
        out.fields.clear();
        out.malformed = true;
    }
    out
}

/// Normalizes one cell (CONTRACT §3). `Ok(None)` is an empty cell: "no change".
pub fn normalize(
    kind: Kind,
    field: &str,
    raw: &str,
    date_formats: &[String],
) -> Result<Option<Value>, Problem> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let value =
        match kind {
            Kind::Text => Value::Text(s.to_owned()),
            Kind::Lower => Value::Text(s.to_lowercase()),
            Kind::Phone => match normalize_phone(s) {
                // A cell of punctuation only (`-`, `( )`) says as much as an empty cell.
                p if p.is_empty() => return Ok(None),
                p => Value::Text(p),
            },
            Kind::Bool => Value::Bool(parse_bool(s).ok_or_else(|| {
                Problem::invalid(field, format!("{field} is not a valid boolean"))
            })?),
            Kind::Date => {
                // chrono's `%Y` takes any number of digits and a sign: `02/01/80` would be
                // the year 80 and `-0001-01-01` cannot be sent as `YYYY-MM-DD`. A birth date
                // has a four-digit year; a later format (`%y`) may still read `80` as 1980.
                let date = date_formats
                    .iter()
                    .find_map(|f| {
                        NaiveDate::parse_from_str(s, f)
                            .ok()
                            .filter(|d| (1000..=9999).contains(&d.year()))
                    })
                    .ok_or_else(|| Problem::invalid(field, "dateofbirth is not a valid date"))?;
                Value::Text(date.format("%Y-%m-%d").to_string())
            }
        };
    Ok(Some(value))
}

/// A space of any width (Unicode Zs): spreadsheets and CRMs write `020\u{a0}7946 0958`
/// with a no-break space that looks like any other, and CONTRACT §3 removes spaces.
fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Strips the usual punctuation of phone numbers; anything else (an extension such as
/// `x204`) is left in place for validation to reject, so nothing is dropped silently.
pub fn normalize_phone(s: &str) -> String {
    let stripped: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')') && !is_space(*c))
        .collect();
    // Stripping can bare other white space at an end (`+\u{a0}(`): trim it too, or the
    // next normalizing of the result would, and a confirmed value would differ from itself.
    let stripped = stripped.trim();
    match stripped.strip_prefix('+') {
        Some(rest) => format!("00{rest}"),
        None => stripped.to_owned(),
    }
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
