use super::*;

#[test]
fn formula_cells_get_a_leading_quote_and_nothing_else_changes() {
    for (cell, written) in [
        (
            "=HYPERLINK(\"http://x\",\"y\")",
            "'=HYPERLINK(\"http://x\",\"y\")",
        ),
        ("+cmd", "'+cmd"),
        ("-2+3", "'-2+3"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        // Already quoted: quoted again, so that stripping one quote is always right.
        ("'t Hooft", "''t Hooft"),
        ("'=1+1", "''=1+1"),
    ] {
        assert_eq!(neutralise(cell), written, "{cell:?}");
        assert!(matches!(neutralise(cell), Cow::Owned(_)));
    }
    for cell in [
        "",
        "R-1",
        "jane@example.com",
        "a=b",
        "x+1",
        " =1+1",       // a space first: spreadsheets read it as text already
        "\u{ff1d}1+1", // fullwidth equals sign: not a formula
        "0044",
        "true",
        "email address format invalid",
    ] {
        assert!(
            matches!(neutralise(cell), Cow::Borrowed(c) if c == cell),
            "{cell:?} was changed"
        );
    }
}

/// `CategoryCounts` indexes by `category as usize`: `ALL` must follow the declaration.
#[test]
fn every_category_has_its_own_count() {
    let mut by = CategoryCounts::default();
    for (i, c) in Category::ALL.into_iter().enumerate() {
        assert_eq!(c as usize, i, "{c:?}");
        (0..=i).for_each(|_| by.add(c));
    }
    let counted: Vec<(Category, u64)> = by.iter().collect();
    let expected: Vec<(Category, u64)> = Category::ALL.into_iter().zip(1..).collect();
    assert_eq!(counted, expected);
    let json = serde_json::to_value(&by).unwrap();
    assert_eq!(json["invalid"], 1);
    assert_eq!(json["failed"], 8);
}

#[test]
fn stripping_one_leading_quote_gives_back_the_original() {
    let original = |written: &str| written.strip_prefix('\'').unwrap_or(written).to_owned();
    for cell in [
        "",
        "'",
        "''",
        "=",
        "'=",
        "-",
        "--",
        "@",
        "\t",
        "\r",
        "'x",
        "x'",
        "=1+1",
        "'+1",
        "plain",
        "-2+3",
        "''t Hooft",
    ] {
        assert_eq!(original(&neutralise(cell)), cell, "{cell:?}");
    }
}

#[test]
fn rows_are_written_neutralised_and_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let started = DateTime::parse_from_rfc3339("2026-12-03T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut report = Report::create(dir.path(), started).unwrap();
    let pos = Position {
        file: "export.csv".into(),
        line: 7,
    };
    let problem = Problem {
        category: crate::model::Category::Conflict,
        http_status: Some(409),
        field: "email".into(),
        message: "-the email is already in use".into(),
    };
    report.problem(&pos, "=R-1", &problem).unwrap();
    let counted = report.errors_by_category();
    assert_eq!(counted.get(crate::model::Category::Conflict), 1);
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<u64>(), 1);
    let change = Change {
        field: "firstname".into(),
        old: Some(crate::model::Value::Text("@old".into())),
        new: crate::model::Value::Text("+new, \"quoted\"".into()),
    };
    report.change(&pos, "R-2", &change).unwrap();
    report.errors.flush().unwrap();
    report.changes.flush().unwrap();
    let read = |name: &str| -> Vec<Vec<String>> {
        csv::Reader::from_path(report.dir().join(name))
            .unwrap()
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    };
    assert_eq!(
        read("errors.csv"),
        [[
            "export.csv",
            "7",
            "'=R-1",
            "conflict",
            "409",
            "email",
            "'-the email is already in use"
        ]]
    );
    assert_eq!(
        read("changes.csv"),
        [[
            "export.csv",
            "7",
            "R-2",
            "firstname",
            "'@old",
            "'+new, \"quoted\""
        ]]
    );
}

#[test]
fn a_run_marks_the_reports_that_killed_runs_left_incomplete_and_only_those() {
    let root = tempfile::tempdir().unwrap();
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    // Killed: its folder has errors.csv and .lock, no summary.json, and nobody holds the lock.
    let killed = Report::create(root.path(), at("2026-12-01T02:00:00Z")).unwrap();
    let killed_dir = killed.dir().to_path_buf();
    drop(killed); // the process died: the lock goes with it
    // Still writing (a dry run beside a real run): its lock is held. Being created, it marks
    // the killed run's folder.
    let running = Report::create(root.path(), at("2026-12-02T02:00:00Z")).unwrap();
    assert_eq!(running.incomplete_earlier, vec![killed_dir.clone()]);
    // Complete.
    let done = Report::create(root.path(), at("2026-12-02T03:00:00Z")).unwrap();
    let done_dir = done.finish(&summary("20261202T030000Z")).unwrap();
    assert!(
        !done_dir.join(".lock").exists(),
        "a complete report keeps no lock file"
    );

    let next = Report::create(root.path(), at("2026-12-03T02:00:00Z")).unwrap();
    assert!(
        next.incomplete_earlier.is_empty(),
        "marked once, and never a running one"
    );
    assert!(killed_dir.join("INCOMPLETE").exists());
    assert!(!running.dir().join("INCOMPLETE").exists());
    assert!(!done_dir.join("INCOMPLETE").exists());
    let mode = std::fs::metadata(killed_dir.join("INCOMPLETE"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

fn summary(run_id: &str) -> Summary {
    Summary {
        run_id: run_id.to_owned(),
        ..Summary::default()
    }
}
