//! Bytes -> an HTTP error answer -> `send::retry::parse_messages` and `classify`, as the
//! send stage calls them on every non-2xx response.
//!
//! The first two bytes pick the status (100..=599); the rest is the body, decoded lossily as
//! reqwest's `Response::text` does. Besides "no panic": every message is non-empty, trimmed
//! and a single line (each becomes one `errors.csv` row and one log line), a rejection has at
//! least one problem, all with the answer's status, and `not_configured` only comes with 400.
#![no_main]

use accountsync::model::Category;
use accountsync::send::retry::{Decision, classify, field_of, parse_messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_le_bytes([*a, *b]) % 500, rest),
        _ => (400, data),
    };
    let body = String::from_utf8_lossy(body);

    for m in parse_messages(&body) {
        check_message(&m);
        let _ = field_of(&m);
    }
    match classify(status, &body, None) {
        Decision::Reject(problems) => {
            assert!(!problems.is_empty(), "a rejection without a message");
            for p in problems {
                check_message(&p.message);
                assert_eq!(p.http_status, Some(status));
                if p.category == Category::NotConfigured {
                    assert_eq!(status, 400);
                }
            }
        }
        Decision::Retry {
            detail, status: s, ..
        }
        | Decision::GiveUp { detail, status: s } => {
            assert_eq!(s, Some(status));
            check_message(&detail);
        }
        Decision::Unexpected { detail, status: s } => {
            assert_eq!(s, status);
            assert!(
                (400..=499).contains(&status),
                "unexpected {status} outside 4xx"
            );
            assert!(
                ![400, 403, 404, 409].contains(&status),
                "a documented 4xx as unexpected"
            );
            check_message(&detail);
        }
        Decision::Success => assert!((200..=299).contains(&status)),
        Decision::Unauthorized => assert_eq!(status, 401),
    }
});

fn check_message(m: &str) {
    assert!(!m.is_empty(), "empty message");
    assert_eq!(m.trim(), m, "untrimmed message {m:?}");
    assert!(!m.contains(['\n', '\r']), "multi-line message {m:?}");
}
