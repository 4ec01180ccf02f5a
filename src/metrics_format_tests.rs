//! A line-format check of the Prometheus text exposition format: `# HELP name text` and
//! `# TYPE name type` before a metric's samples, samples `name{label="value",...} value`,
//! each metric's lines together, a newline at the end.

use std::collections::BTreeSet;

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char| ok_first(c) || c.is_ascii_digit();
    chars.next().is_some_and(ok_first) && chars.all(ok_rest)
}

fn is_value(s: &str) -> bool {
    matches!(s, "NaN" | "+Inf" | "-Inf") || s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// `a="x",b="y"` (the part between the braces).
fn check_labels(labels: &str) -> Result<(), String> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or(format!("label {rest:?}"))?;
        if !is_name(name, false) {
            return Err(format!("label name {name:?}"));
        }
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    other => return Err(format!("escape {other:?} in {labels:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return Err(format!("unterminated {labels:?}")),
                Some(_) => {}
            }
        };
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else if !rest.is_empty() {
            return Err(format!("after label {name:?}: {rest:?}"));
        }
    }
    Ok(())
}

pub fn check_text_format(text: &str) -> Result<(), String> {
    if !text.ends_with('\n') {
        return Err("no newline at the end".into());
    }
    let mut done: BTreeSet<String> = BTreeSet::new(); // metrics whose lines are over
    let mut current: Option<String> = None;
    let mut typed = false;
    let mut samples = 0;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let (name, is_sample) = if let Some(rest) = line.strip_prefix("# HELP ") {
            (rest.split(' ').next().unwrap_or_default(), false)
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            let kind = words.next().unwrap_or_default();
            let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !kinds.contains(&kind) || words.next().is_some() {
                return Err(format!("line {n}: TYPE {rest:?}"));
            }
            (name, false)
        } else if line.starts_with('#') {
            continue; // a comment
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or(format!("line {n}: {line:?}"))?;
            if !is_value(value) {
                return Err(format!("line {n}: value {value:?}"));
            }
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').ok_or(format!("line {n}: {{"))?;
                    check_labels(labels).map_err(|e| format!("line {n}: {e}"))?;
                    name
                }
                None => series,
            };
            (name, true)
        };
        if !is_name(name, true) {
            return Err(format!("line {n}: metric name {name:?}"));
        }
        if current.as_deref() != Some(name) {
            if let Some(previous) = current.take() {
                if samples == 0 {
                    return Err(format!("{previous} has no sample"));
                }
                done.insert(previous);
            }
            if done.contains(name) {
                return Err(format!("line {n}: {name}'s lines are not together"));
            }
            current = Some(name.to_owned());
            (typed, samples) = (false, 0);
        }
        if is_sample {
            if !typed {
                return Err(format!("line {n}: sample of {name} before its TYPE"));
            }
            samples += 1;
        } else if samples > 0 {
            return Err(format!(
                "line {n}: HELP or TYPE of {name} after its samples"
            ));
        } else if line.starts_with("# TYPE ") {
            typed = true;
        }
    }
    match current {
        Some(name) if samples == 0 => Err(format!("{name} has no sample")),
        _ => Ok(()),
    }
}

#[test]
fn the_format_check_refuses_what_node_exporter_would() {
    let good = "# HELP a x\n# TYPE a gauge\na{b=\"c\\\"d\",e=\"\"} 1.5\n# TYPE f gauge\nf -Inf\n";
    assert_eq!(check_text_format(good), Ok(()));
    for bad in [
        "# TYPE a gauge\na 1",                             // no final newline
        "a 1\n",                                           // no TYPE
        "# TYPE a gauge\na one\n",                         // value
        "# TYPE a gauge\na{b=c} 1\n",                      // unquoted label
        "# TYPE a gauge\na{b=\"c\"d=\"e\"} 1\n",           // no comma
        "# TYPE a gauge\na 1\n# HELP a x\n",               // HELP after samples
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", // lines apart
        "# TYPE a gauge\n# TYPE b gauge\nb 1\n",           // a has no sample
        "# TYPE a-b gauge\na-b 1\n",                       // name
        "# TYPE a gauge\n",                                // no sample
    ] {
        assert!(check_text_format(bad).is_err(), "accepted {bad:?}");
    }
}
