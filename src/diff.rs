//! Diff: a record's normalized values against the last values the API confirmed -> the
//! PATCH to send, or nothing (CONTRACT §4). **No IO here**: the cache lookup happens in the
//! pipeline and its result is passed in.

use std::collections::BTreeSet;

use serde_json::{Map, Value as Json};

use sha2::{Digest, Sha256};

use crate::model::{ADDRESS_PREFIX, CUSTOM_PREFIX, Change, Fields, Patch, RowDigest, Value};

/// Builds the patch for `row` given what the API last confirmed for the account.
///
/// Empty cells are absent from `row`, so they never produce a change: the contract reads an
/// empty cell as "no change", not "clear the field".
pub fn diff(row: &Fields, confirmed: &Fields, address_types: &[String]) -> Option<Patch> {
    diff_against(row, confirmed, &BTreeSet::new(), address_types)
}

/// [`diff`] when some confirmed values may no longer be the API's: `unknown` are fields a
/// request may have changed without an answer saying so (a kept record's). The row sends
/// whatever it has for them, even a value equal to the confirmed one (a row reverted after
/// an applied-but-unanswered request must still put the API back); `old` stays the last
/// confirmed value.
pub fn diff_against(
    row: &Fields,
    confirmed: &Fields,
    unknown: &BTreeSet<String>,
    address_types: &[String],
) -> Option<Patch> {
    let changes: Vec<Change> = row
        .iter()
        .filter(|(path, new)| unknown.contains(*path) || confirmed.get(*path) != Some(*new))
        .map(|(path, new)| Change {
            field: path.clone(),
            old: confirmed.get(path).cloned(),
            new: new.clone(),
        })
        .collect();
    if changes.is_empty() {
        return None;
    }

    let mut body = Map::new();
    let mut custom = Map::new();
    let mut addresses_changed = false;
    for change in &changes {
        if change.field.starts_with(ADDRESS_PREFIX) {
            addresses_changed = true;
        } else if let Some(name) = change.field.strip_prefix(CUSTOM_PREFIX) {
            custom.insert(name.to_owned(), (&change.new).into());
        } else {
            body.insert(change.field.clone(), (&change.new).into());
        }
    }
    if !custom.is_empty() {
        body.insert("customparameters".into(), Json::Object(custom));
    }
    if addresses_changed {
        // The API replaces an address by type, so each object must be complete: the last
        // confirmed address of that type overlaid with this row's non-empty cells.
        let merged = apply(confirmed, &changes);
        let array: Vec<Json> = address_types
            .iter()
            .filter_map(|kind| address_object(&merged, kind))
            .collect();
        body.insert("addresses".into(), Json::Array(array));
    }
    Some(Patch {
        changes,
        body,
        row: fingerprint(row),
    })
}

/// A fingerprint of a row's values that is stable across runs and versions (SHA-256,
/// truncated to 128 bits). When it equals the digest stored at the last full
/// confirmation, the row diffs as unchanged without reading the confirmed values. A
/// collision would hide a change, so the hash is a cryptographic one, not a fast one.
pub fn fingerprint(row: &Fields) -> RowDigest {
    let mut h = Sha256::new();
    for (path, value) in row {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") cannot hash alike.
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        match value {
            Value::Bool(b) => h.update([b'b', u8::from(*b)]),
            Value::Text(t) => {
                h.update([b't']);
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
        }
    }
    let full = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The confirmed values after the API accepted `changes`: what the cache stores.
pub fn apply(confirmed: &Fields, changes: &[Change]) -> Fields {
    let mut out = confirmed.clone();
    for c in changes {
        out.insert(c.field.clone(), c.new.clone());
    }
    out
}

fn address_object(fields: &Fields, kind: &str) -> Option<Json> {
    let prefix = format!("{ADDRESS_PREFIX}{kind}.");
    let mut obj = Map::new();
    for (path, value) in fields.range(prefix.clone()..) {
        let Some(name) = path.strip_prefix(&prefix) else {
            break;
        };
        obj.insert(name.to_owned(), value.into());
    }
    if obj.is_empty() {
        return None;
    }
    obj.insert("addresstype".into(), Json::String(kind.to_owned()));
    Some(Json::Object(obj))
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
