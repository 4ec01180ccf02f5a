//! The shapes an error body can take. The contract tells the product to expect all of them,
//! so the sandbox can answer in each (or rotate through them) to prove the product parses
//! every one into the same separate messages.

use clap::ValueEnum;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ErrorFormat {
    /// `• msg1 <br />• msg2`, as on the seed page (text/html).
    Seed,
    /// `{"message": "• msg1 <br />• msg2"}`
    JsonMessage,
    /// `{"errors": ["msg1", "msg2"]}`
    JsonErrors,
    /// `{"errors": [{"message": "msg1"}, {"message": "msg2"}]}`
    JsonErrorObjects,
    /// One message per line (text/plain).
    Text,
    /// The five above in turn, one per error response.
    Rotate,
}

const ROTATION: [ErrorFormat; 5] = [
    ErrorFormat::Seed,
    ErrorFormat::JsonMessage,
    ErrorFormat::JsonErrors,
    ErrorFormat::JsonErrorObjects,
    ErrorFormat::Text,
];

impl ErrorFormat {
    /// The concrete form of the `n`-th error response (counting from 0).
    pub fn resolve(self, n: usize) -> ErrorFormat {
        match self {
            ErrorFormat::Rotate => ROTATION[n % ROTATION.len()],
            other => other,
        }
    }
}

/// The seed's own form: the real bullet, a space, the message, ` <br />` between messages.
pub fn bulleted(messages: &[String]) -> String {
    messages
        .iter()
        .map(|m| format!("\u{2022} {m}"))
        .collect::<Vec<_>>()
        .join(" <br />")
}

/// Content type and body for `messages` in `form` (already resolved, never `Rotate`).
pub fn render(form: ErrorFormat, messages: &[String]) -> (&'static str, String) {
    const JSON: &str = "application/json";
    match form {
        ErrorFormat::Seed | ErrorFormat::Rotate => ("text/html; charset=utf-8", bulleted(messages)),
        ErrorFormat::JsonMessage => (JSON, json!({ "message": bulleted(messages) }).to_string()),
        ErrorFormat::JsonErrors => (JSON, json!({ "errors": messages }).to_string()),
        ErrorFormat::JsonErrorObjects => {
            let objects: Vec<_> = messages.iter().map(|m| json!({ "message": m })).collect();
            (JSON, json!({ "errors": objects }).to_string())
        }
        ErrorFormat::Text => ("text/plain; charset=utf-8", messages.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<String> {
        vec!["msg1".to_string(), "msg2".to_string()]
    }

    #[test]
    fn each_form() {
        let cases = [
            (
                ErrorFormat::Seed,
                "text/html; charset=utf-8",
                "• msg1 <br />• msg2",
            ),
            (
                ErrorFormat::JsonMessage,
                "application/json",
                r#"{"message":"• msg1 <br />• msg2"}"#,
            ),
            (
                ErrorFormat::JsonErrors,
                "application/json",
                r#"{"errors":["msg1","msg2"]}"#,
            ),
            (
                ErrorFormat::JsonErrorObjects,
                "application/json",
                r#"{"errors":[{"message":"msg1"},{"message":"msg2"}]}"#,
            ),
            (ErrorFormat::Text, "text/plain; charset=utf-8", "msg1\nmsg2"),
        ];
        for (form, content_type, body) in cases {
            assert_eq!(
                render(form, &two()),
                (content_type, body.to_string()),
                "{form:?}"
            );
        }
    }

    #[test]
    fn single_message_has_no_separator() {
        let one = vec!["internal server error".to_string()];
        assert_eq!(
            render(ErrorFormat::Seed, &one).1,
            "\u{2022} internal server error"
        );
    }

    #[test]
    fn rotate_cycles_in_order() {
        let seen: Vec<_> = (0..6).map(|n| ErrorFormat::Rotate.resolve(n)).collect();
        assert_eq!(seen[..5], ROTATION);
        assert_eq!(seen[5], ErrorFormat::Seed);
        assert_eq!(ErrorFormat::Text.resolve(3), ErrorFormat::Text);
    }
}
