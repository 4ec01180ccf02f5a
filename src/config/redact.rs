//! TOML errors without secrets. toml's own error text quotes the offending line, and the
//! line an operator gets wrong is often a token pasted into the file (`token = "…"`, an
//! unknown key); that text goes to the journal, to `check-config`'s output and to a
//! SIGHUP's warning. So the excerpt is rendered here, from the error's span, with the value
//! of any line whose key looks secret replaced.

use std::borrow::Cow;

/// Words that make a key look like it holds a secret (compared lowercased, anywhere in the
/// key: `api_token`, `client_secret`, `db_password`).
const SECRET_WORDS: &[&str] = &["token", "secret", "password", "passwd", "apikey", "api_key"];

/// Keys whose values name where the token is, not the token (`[api].token_env`,
/// `[api].token_file`): showing them is what makes their errors useful.
const NOT_SECRET: &[&str] = &["token_env", "token_file"];

/// What a secret value is shown as.
const REDACTED: &str = "<redacted>";

/// Whether the value of `key` (one key, or a dotted key whose last part counts) may be a
/// secret.
pub(super) fn secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    !NOT_SECRET.contains(&last.as_str()) && SECRET_WORDS.iter().any(|w| last.contains(w))
}

/// The line with everything after its first `=` replaced when any key on it (a plain
/// `key = value`, or the keys of an inline table) looks secret; otherwise the line as is.
pub(super) fn redact_line(line: &str) -> Cow<'_, str> {
    let Some(first_eq) = line.find('=') else {
        return Cow::Borrowed(line);
    };
    // The text before each `=` ends with the key it assigns: `a = { token = "x" }` has the
    // keys `a` and `token`. A `=` inside a quoted value can only add false alarms, which
    // hide a harmless value at worst.
    let secret = line.match_indices('=').any(|(i, _)| {
        let before = line[..i].trim_end();
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || "_-.\"'".contains(c)))
            .map_or(0, |p| p + 1);
        secret_key(&before[start..])
    });
    if secret {
        Cow::Owned(format!("{} {REDACTED}", &line[..=first_eq]))
    } else {
        Cow::Borrowed(line)
    }
}

/// toml's error text (`TOML parse error at line 3, column 1`, the line, a `^` marker, the
/// message) with the quoted line passed through [`redact_line`]. Without a span there is
/// no excerpt, only the message.
pub(super) fn parse_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |p| start + p);
    let line_no = 1 + text[..line_start].matches('\n').count();
    let column = text[line_start..start].chars().count();
    let raw = text[line_start..line_end].trim_end_matches('\r');
    let shown = redact_line(raw);
    let width = match shown {
        // The marker must not measure the hidden value either.
        Cow::Owned(_) => 1,
        Cow::Borrowed(_) => {
            let end = floor_char_boundary(text, span.end.clamp(start, line_end));
            text[start..end].chars().count().max(1)
        }
    };
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "TOML parse error at line {line_no}, column {}\n{gutter} |\n{line_no} | {shown}\n{gutter} | {}{}\n{message}\n",
        column + 1,
        " ".repeat(column.min(shown.chars().count())),
        "^".repeat(width),
    )
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_look_secret() {
        for key in [
            "token",
            "api_token",
            "TOKEN",
            "client_secret",
            "password",
            "db.password",
            "\"apikey\"",
            "bearer-token",
        ] {
            assert!(secret_key(key), "{key}");
        }
        for key in [
            "token_env",
            "token_file",
            "api.token_file",
            "base_url",
            "email",
        ] {
            assert!(!secret_key(key), "{key}");
        }
    }

    #[test]
    fn a_secret_line_keeps_its_key_and_loses_its_value() {
        assert_eq!(
            redact_line("token = \"sekret-tok-123\""),
            "token = <redacted>"
        );
        assert_eq!(
            redact_line("api = { base_url = \"x\", password = \"p4ss\" }"),
            "api = <redacted>"
        );
        for line in [
            "token_env = \"ACCOUNTSYNC_TOKEN\"",
            "token_file = \"/etc/accountsync/api-token\"",
            "base_url = \"https://x\"",
            "[api]",
        ] {
            assert_eq!(redact_line(line), line);
        }
    }

    #[test]
    fn the_excerpt_of_a_parse_error_hides_a_secret_value() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Api {
            base_url: String,
        }
        let text = "base_url = \"x\"\ntoken = \"sekret-tok-123\"\n";
        let error = toml::from_str::<Api>(text).unwrap_err();
        assert!(
            error.to_string().contains("sekret"),
            "toml's own text shows it"
        );
        let shown = parse_error(text, &error);
        assert!(!shown.contains("sekret"), "{shown}");
        assert!(shown.contains("line 2, column 1"), "{shown}");
        assert!(shown.contains("2 | token = <redacted>"), "{shown}");
        assert!(shown.contains("unknown field `token`"), "{shown}");

        // An ordinary line is shown as toml shows it.
        let text = "base_url = \"x\"\ncolour = 1\n";
        let error = toml::from_str::<Api>(text).unwrap_err();
        assert_eq!(parse_error(text, &error), error.to_string());
    }
}
