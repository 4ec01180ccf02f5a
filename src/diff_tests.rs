use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::model::Value;

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| {
            let value = match *v {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                s => Value::Text(s.to_owned()),
            };
            (k.to_string(), value)
        })
        .collect()
}

fn types() -> Vec<String> {
    vec!["billing".into(), "home".into()]
}

/// Diffs `row` against `confirmed` and compares the body with `expected` (addresses order
/// ignored); `None` means nothing to send.
#[track_caller]
fn check(row: &[(&str, &str)], confirmed: &[(&str, &str)], expected: Option<serde_json::Value>) {
    let got = diff(&fields(row), &fields(confirmed), &types()).map(|p| {
        let mut body = serde_json::Value::Object(p.body);
        if let Some(serde_json::Value::Array(a)) = body.get_mut("addresses") {
            a.sort_by_key(|o| o["addresstype"].to_string());
        }
        body
    });
    assert_eq!(got, expected);
}

#[test]
fn unknown_fields_are_sent_even_when_they_equal_the_confirmed_value() {
    let confirmed = fields(&[
        ("email", "a@b.co"),
        ("firstname", "Ann"),
        ("addresses.home.street", "1 Old Road"),
        ("addresses.home.towncity", "Leeds"),
    ]);
    let unknown: BTreeSet<String> = ["email".into(), "addresses.home.street".into()].into();
    let row = confirmed.clone();
    let patch = diff_against(&row, &confirmed, &unknown, &types()).expect("a patch");
    assert_eq!(
        serde_json::Value::Object(patch.body),
        json!({
            "email": "a@b.co",
            "addresses": [{"addresstype": "home", "street": "1 Old Road", "towncity": "Leeds"}]
        })
    );
    let changed: Vec<(&str, Option<&Value>)> = patch
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.old.as_ref()))
        .collect();
    assert_eq!(
        changed,
        [
            (
                "addresses.home.street",
                Some(&Value::Text("1 Old Road".into()))
            ),
            ("email", Some(&Value::Text("a@b.co".into()))),
        ],
        "old is the last confirmed value"
    );
    // A field the row leaves empty is not sent, unknown or not.
    let without_email = fields(&[("firstname", "Ann")]);
    assert!(diff_against(&without_email, &confirmed, &unknown, &types()).is_none());
}

#[test]
fn a_new_account_sends_every_non_empty_field() {
    check(
        &[
            ("email", "a@b.co"),
            ("marketingallowed", "true"),
            ("addresses.home.street", "High St"),
            ("customparameters.tier", "gold"),
        ],
        &[],
        Some(json!({
            "email": "a@b.co",
            "marketingallowed": true,
            "addresses": [{"addresstype": "home", "street": "High St"}],
            "customparameters": {"tier": "gold"}
        })),
    );
}

#[test]
fn only_changed_fields_are_sent() {
    let confirmed = [
        ("email", "a@b.co"),
        ("firstname", "Ann"),
        ("customparameters.tier", "gold"),
        ("customparameters.store", "x"),
    ];
    check(
        &[("email", "a@b.co"), ("firstname", "Ann")],
        &confirmed,
        None,
    );
    check(
        &[("firstname", "Anne")],
        &confirmed,
        Some(json!({"firstname": "Anne"})),
    );
    check(
        &[
            ("customparameters.tier", "silver"),
            ("customparameters.store", "x"),
        ],
        &confirmed,
        Some(json!({"customparameters": {"tier": "silver"}})),
    );
}

#[test]
fn an_address_change_sends_every_mapped_address_whole() {
    let confirmed = [
        ("addresses.home.street", "High St"),
        ("addresses.home.postcode", "AB1"),
        ("addresses.billing.street", "Box 1"),
        ("addresses.other.street", "not mapped"),
    ];
    check(&[("addresses.home.street", "High St")], &confirmed, None);
    check(
        &[("addresses.home.street", "Low St")],
        &confirmed,
        Some(json!({"addresses": [
            {"addresstype": "billing", "street": "Box 1"},
            {"addresstype": "home", "street": "Low St", "postcode": "AB1"},
        ]})),
    );
}

#[test]
fn changes_carry_old_values_and_apply_gives_the_new_confirmed_state() {
    let confirmed = fields(&[("email", "a@b.co"), ("firstname", "Ann")]);
    let patch = diff(
        &fields(&[("email", "c@d.co"), ("lastname", "Lee")]),
        &confirmed,
        &types(),
    )
    .unwrap();
    let old: Vec<(&str, Option<String>)> = patch
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.old.as_ref().map(Value::to_string)))
        .collect();
    assert_eq!(old, [("email", Some("a@b.co".into())), ("lastname", None)]);
    assert_eq!(
        apply(&confirmed, &patch.changes),
        fields(&[
            ("email", "c@d.co"),
            ("firstname", "Ann"),
            ("lastname", "Lee")
        ])
    );
}

fn any_fields() -> impl Strategy<Value = Fields> {
    let key = prop_oneof![
        "(email|firstname|status|verified)",
        "addresses\\.(home|billing)\\.(street|postcode)",
        "customparameters\\.[a-c]",
    ];
    let value = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        "[a-z ]{1,8}".prop_map(Value::Text)
    ];
    prop::collection::btree_map(key, value, 0..8)
}

proptest! {
    /// A record diffed against itself sends nothing: the run after a confirmed sync is quiet.
    #[test]
    fn diff_of_a_record_against_itself_is_empty(f in any_fields()) {
        prop_assert!(diff(&f, &f, &types()).is_none());
    }

    /// Once the API confirmed a patch, the same row diffs as unchanged.
    #[test]
    fn a_confirmed_patch_is_never_sent_again(row in any_fields(), confirmed in any_fields()) {
        if let Some(patch) = diff(&row, &confirmed, &types()) {
            let after = apply(&confirmed, &patch.changes);
            prop_assert!(diff(&row, &after, &types()).is_none());
        }
    }
}

#[test]
fn fingerprints_tell_rows_apart() {
    let a = fields(&[("email", "a@b.co"), ("firstname", "Ann")]);
    assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    for other in [
        fields(&[("email", "a@b.co"), ("firstname", "Anne")]),
        fields(&[("email", "a@b.co")]),
        fields(&[("email", "a@b.co"), ("lastname", "Ann")]),
        fields(&[("email", "a@b.coA"), ("firstname", "nn")]),
        fields(&[("email", "a@b.co"), ("firstname", "true")]),
    ] {
        assert_ne!(fingerprint(&a), fingerprint(&other), "{other:?}");
    }
    // Pinned: the digest is stored in caches, so it must not change between versions.
    assert_eq!(
        fingerprint(&a),
        [
            0x55, 0x39, 0x99, 0x8d, 0xb0, 0x17, 0x30, 0xae, 0x2b, 0xfd, 0x0f, 0x90, 0xe3, 0xa2,
            0x55, 0xfc
        ]
    );
}
