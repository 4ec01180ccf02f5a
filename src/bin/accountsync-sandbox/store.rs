//! The sandbox's accounts: what the remote system would hold. Kept apart from the request
//! handling so the merge rules (fields overwrite, addresses replace by type, parameters merge
//! by name) can be tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the header has no `{0}` column (expected accountreference,email[,locked])")]
    MissingColumn(&'static str),
    #[error("line {line}: {message}")]
    Row { line: u64, message: String },
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

#[derive(Debug, Clone)]
pub struct Account {
    id: u64,
    reference: String,
    locked: bool,
    /// Top-level scalar fields as last sent, under their API names.
    fields: Map<String, Value>,
    /// One object per addresstype, in the order the types were first seen.
    addresses: Vec<Map<String, Value>>,
    customparameters: Map<String, Value>,
}

impl Account {
    fn new(id: u64, reference: &str) -> Self {
        Account {
            id,
            reference: reference.to_string(),
            locked: false,
            fields: Map::new(),
            addresses: Vec::new(),
            customparameters: Map::new(),
        }
    }

    fn email(&self) -> Option<&str> {
        self.fields.get("email").and_then(Value::as_str)
    }

    /// Applies a body that has already passed validation.
    fn apply(&mut self, body: &Map<String, Value>) {
        for (key, value) in body {
            match (key.as_str(), value) {
                ("addresses", Value::Array(items)) => {
                    for item in items.iter().filter_map(Value::as_object) {
                        let kind = item.get("addresstype");
                        match self
                            .addresses
                            .iter_mut()
                            .find(|a| a.get("addresstype") == kind)
                        {
                            Some(slot) => *slot = item.clone(),
                            None => self.addresses.push(item.clone()),
                        }
                    }
                }
                ("customparameters", Value::Object(params)) => {
                    for (name, v) in params {
                        self.customparameters.insert(name.clone(), v.clone());
                    }
                }
                _ => {
                    self.fields.insert(key.clone(), value.clone());
                }
            }
        }
    }

    /// The seed response's shape, without `sessiontoken`. Fields never set are left out
    /// rather than sent as null.
    pub fn to_json(&self) -> Value {
        let mut out = self.fields.clone();
        out.insert("accountid".into(), json!(self.id));
        out.insert("accountreference".into(), json!(self.reference));
        out.insert("addresses".into(), json!(self.addresses));
        out.insert(
            "customparameters".into(),
            Value::Object(self.customparameters.clone()),
        );
        Value::Object(out)
    }
}

#[derive(Debug)]
pub struct Store {
    accounts: BTreeMap<String, Account>,
    /// Lowercased e-mail -> the references holding it, so the 409 check is a lookup: a scan
    /// of every account per request made a long run quadratic (126 requests/s at 20,000).
    emails: HashMap<String, Vec<String>>,
    /// Without an accounts file every reference exists and is created on its first update.
    open: bool,
    next_id: u64,
}

impl Store {
    pub fn open() -> Self {
        Store {
            accounts: BTreeMap::new(),
            emails: HashMap::new(),
            open: true,
            next_id: 1,
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open accounts file {}", path.display()))?;
        Store::from_csv(file).with_context(|| format!("accounts file {}", path.display()))
    }

    /// Reads `accountreference,email[,locked]`; every listed account exists, no other does.
    pub fn from_csv<R: Read>(reader: R) -> Result<Self, LoadError> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let headers = csv.headers()?.clone();
        let column = |name: &'static str| headers.iter().position(|h| h == name);
        let reference_at =
            column("accountreference").ok_or(LoadError::MissingColumn("accountreference"))?;
        let email_at = column("email").ok_or(LoadError::MissingColumn("email"))?;
        let locked_at = column("locked");
        let mut store = Store {
            accounts: BTreeMap::new(),
            emails: HashMap::new(),
            open: false,
            next_id: 1,
        };
        for record in csv.records() {
            let record = record?;
            let line = record.position().map_or(0, |p| p.line());
            let row_err = |message: String| LoadError::Row { line, message };
            let reference = record.get(reference_at).unwrap_or_default();
            if reference.is_empty() {
                return Err(row_err("empty accountreference".into()));
            }
            if store.accounts.contains_key(reference) {
                return Err(row_err(format!(
                    "accountreference {reference:?} listed twice"
                )));
            }
            let locked = match locked_at.and_then(|i| record.get(i)).unwrap_or_default() {
                "" | "false" => false,
                "true" => true,
                other => {
                    return Err(row_err(format!(
                        "locked must be true, false or empty, not {other:?}"
                    )));
                }
            };
            let mut account = Account::new(store.next_id, reference);
            account.locked = locked;
            let email = record.get(email_at).unwrap_or_default();
            if !email.is_empty() {
                account.fields.insert("email".into(), json!(email));
                store.index_email(None, Some(email), reference);
            }
            store.next_id += 1;
            store.accounts.insert(reference.to_string(), account);
        }
        Ok(store)
    }

    pub fn exists(&self, reference: &str) -> bool {
        self.open || self.accounts.contains_key(reference)
    }

    pub fn is_locked(&self, reference: &str) -> bool {
        self.accounts.get(reference).is_some_and(|a| a.locked)
    }

    /// Whether `email` (compared case-insensitively) belongs to an account other than
    /// `reference`.
    pub fn email_taken_by_other(&self, email: &str, reference: &str) -> bool {
        self.emails
            .get(&email.to_lowercase())
            .is_some_and(|holders| holders.iter().any(|r| r != reference))
    }

    /// Moves `reference` in the e-mail index from `old` to `new` (either may be absent).
    fn index_email(&mut self, old: Option<&str>, new: Option<&str>, reference: &str) {
        let (old, new) = (old.map(str::to_lowercase), new.map(str::to_lowercase));
        if old == new {
            return;
        }
        if let Some(old) = old
            && let Some(holders) = self.emails.get_mut(&old)
        {
            holders.retain(|r| r != reference);
            if holders.is_empty() {
                self.emails.remove(&old);
            }
        }
        if let Some(new) = new {
            self.emails
                .entry(new)
                .or_default()
                .push(reference.to_owned());
        }
    }

    /// Applies a validated body and returns the account as it now stands.
    pub fn apply(&mut self, reference: &str, body: &Map<String, Value>) -> Value {
        let next_id = &mut self.next_id;
        let account = self
            .accounts
            .entry(reference.to_string())
            .or_insert_with(|| {
                *next_id += 1;
                Account::new(*next_id - 1, reference)
            });
        let old = account.email().map(str::to_owned);
        account.apply(body);
        let new = account.email().map(str::to_owned);
        let json = account.to_json();
        self.index_email(old.as_deref(), new.as_deref(), reference);
        json
    }

    /// Reference → account, for the introspection endpoint.
    pub fn snapshot(&self) -> Value {
        let all: Map<String, Value> = self
            .accounts
            .iter()
            .map(|(reference, account)| (reference.clone(), account.to_json()))
            .collect();
        Value::Object(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn loads_accounts_file() -> Result<(), LoadError> {
        let csv = "accountreference,email,locked\nA1,a@x.com,\nA2, B@X.com ,true\nA3,,false\n";
        let store = Store::from_csv(csv.as_bytes())?;
        assert!(store.exists("A1") && store.exists("A3") && !store.exists("A4"));
        assert!(store.is_locked("A2") && !store.is_locked("A1"));
        assert!(store.email_taken_by_other("b@x.com", "A1"));
        assert!(!store.email_taken_by_other("b@x.com", "A2"));
        assert_eq!(store.snapshot()["A2"]["accountid"], json!(2));
        Ok(())
    }

    #[test]
    fn locked_column_is_optional() -> Result<(), LoadError> {
        let store = Store::from_csv("email,accountreference\nz@x.com,R\n".as_bytes())?;
        assert_eq!(store.snapshot()["R"]["email"], json!("z@x.com"));
        Ok(())
    }

    #[test]
    fn bad_files_say_where() {
        let cases = [
            ("accountreference\nA\n", "no `email` column"),
            (
                "accountreference,email\nA,a@x.com\nA,b@x.com\n",
                "line 3: accountreference \"A\" listed twice",
            ),
            (
                "accountreference,email,locked\nA,a@x.com,yes\n",
                "line 2: locked must be",
            ),
        ];
        for (csv, expected) in cases {
            let err = Store::from_csv(csv.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn email_index_follows_changes() -> Result<(), LoadError> {
        let mut store =
            Store::from_csv("accountreference,email\nA,Shared@x.com\nB,shared@X.com\n".as_bytes())?;
        // Two accounts loaded with one e-mail: each sees the other's.
        assert!(store.email_taken_by_other("shared@x.com", "A"));
        assert!(store.email_taken_by_other("SHARED@x.com", "B"));
        store.apply("A", &obj(json!({"email": "a@x.com"})));
        assert!(!store.email_taken_by_other("shared@x.com", "B"));
        assert!(store.email_taken_by_other("shared@x.com", "A"));
        assert!(store.email_taken_by_other("A@X.COM", "B"));
        assert!(!store.email_taken_by_other("a@x.com", "A"));
        // A body without an e-mail leaves the index alone; a new account joins it.
        store.apply("A", &obj(json!({"firstname": "Ann"})));
        assert!(store.email_taken_by_other("a@x.com", "B"));
        store.apply("C", &obj(json!({"email": "c@x.com"})));
        assert!(store.email_taken_by_other("c@x.com", "A"));
        assert!(!store.email_taken_by_other("c@x.com", "C"));
        Ok(())
    }

    #[test]
    fn merge_rules() {
        let mut store = Store::open();
        store.apply(
            "R",
            &obj(json!({"firstname": "Ann", "addresses": [
                {"addresstype": "home", "street": "1 Old St"},
                {"addresstype": "work", "street": "9 Office Rd"}],
                "customparameters": {"loyaltytier": "gold"}})),
        );
        let now = store.apply(
            "R",
            &obj(json!({"firstname": "Anne", "addresses": [{"addresstype": "home", "postcode": "N1"}],
                        "customparameters": {"preferredstore": "Leeds"}})),
        );
        assert_eq!(now["firstname"], json!("Anne"));
        assert_eq!(
            now["addresses"],
            json!([{"addresstype": "home", "postcode": "N1"},
                   {"addresstype": "work", "street": "9 Office Rd"}])
        );
        assert_eq!(
            now["customparameters"],
            json!({"loyaltytier": "gold", "preferredstore": "Leeds"})
        );
        assert_eq!(now["accountid"], json!(1));
        assert_eq!(store.apply("S", &Map::new())["accountid"], json!(2));
    }
}
