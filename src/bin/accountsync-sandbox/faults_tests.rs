use std::time::Duration;

use clap::Parser;
use serde_json::json;

use super::*;
use crate::cli::{Cli, Command};

/// A draw whose top 53 bits make `x` (within 2^-53), with `low` as its low bits.
fn draw_at(x: f64, low: u64) -> u64 {
    ((x * (1u64 << 53) as f64) as u64) << 11 | low
}

#[test]
fn a_draw_is_matched_against_the_rates_in_order() {
    let rates = Rates {
        error_500: 0.1,
        error_503: 0.1,
        error_429: 0.1,
        reset: 0.1,
        slow: 0.1,
        applied_drop: 0.1,
    };
    let cases = [
        (0.0, Kind::Error500),
        (0.099, Kind::Error500),
        (0.100_001, Kind::Error503),
        (0.25, Kind::Error429),
        (0.35, Kind::Reset),
        (0.45, Kind::Slow),
        (0.55, Kind::AppliedDrop),
        (0.6, Kind::None),
        (0.999_999, Kind::None),
    ];
    for (x, kind) in cases {
        assert_eq!(pick(&rates, draw_at(x, 0)).kind(), kind, "{x}");
    }
    // A zero rate never matches, even at x = 0.
    let only_slow = Rates {
        slow: 0.5,
        ..Rates::default()
    };
    assert_eq!(pick(&only_slow, 0), Fault::Slow);
    assert_eq!(pick(&Rates::default(), 0), Fault::None);
    // Rate 1.0 matches every draw, up to the largest.
    let always_reset = Rates {
        reset: 1.0,
        ..Rates::default()
    };
    assert_eq!(pick(&always_reset, u64::MAX), Fault::Reset);
}

#[test]
fn the_low_bits_choose_the_variant() {
    let unavailable = Rates {
        error_503: 1.0,
        ..Rates::default()
    };
    assert_eq!(pick(&unavailable, 0b0), Fault::Unavailable(503));
    assert_eq!(pick(&unavailable, 0b1), Fault::Unavailable(502));
    let too_many = Rates {
        error_429: 1.0,
        ..Rates::default()
    };
    let forms: Vec<bool> = (0..8)
        .map(|low| match pick(&too_many, low) {
            Fault::TooManyRequests { http_date } => http_date,
            other => panic!("{other:?}"),
        })
        .collect();
    // Bits 1-2 zero: one in four.
    assert_eq!(
        forms,
        [true, true, false, false, false, false, false, false]
    );
}

#[test]
fn rates_are_checked() {
    let ok = Rates {
        error_500: 0.1,
        error_503: 0.2,
        applied_drop: 0.7,
        ..Rates::default()
    };
    assert_eq!(ok.check(), Ok(()));
    let over = Rates {
        reset: 0.6,
        slow: 0.6,
        ..Rates::default()
    };
    assert!(over.check().is_err_and(|e| e.contains("add up to 1.2")));
    let negative = Rates {
        error_429: -0.1,
        ..Rates::default()
    };
    assert!(negative.check().is_err_and(|e| e.contains("for 429")));
    let nan = Rates {
        error_500: f64::NAN,
        ..Rates::default()
    };
    assert!(nan.check().is_err());
}

#[test]
fn counts_and_seed_replay() {
    let faults = Faults::new(7, Duration::ZERO, Duration::ZERO);
    let rates = Rates {
        error_500: 0.5,
        reset: 0.25,
        ..Rates::default()
    };
    faults.set(rates, None);
    let first: Vec<Fault> = (0..50).map(|_| faults.draw()).collect();
    faults.set(rates, Some(7));
    let again: Vec<Fault> = (0..50).map(|_| faults.draw()).collect();
    assert_eq!(first, again);
    faults.record_applied("A");
    faults.record_applied("A");
    let stats = faults.stats_json();
    let count = |kind: Kind| first.iter().filter(|f| f.kind() == kind).count() as u64 * 2;
    assert_eq!(stats["faults"]["500"], json!(count(Kind::Error500)));
    assert_eq!(stats["faults"]["reset"], json!(count(Kind::Reset)));
    assert_eq!(stats["faults"]["none"], json!(count(Kind::None)));
    assert_eq!(stats["faults"]["slow"], json!(0));
    assert_eq!(stats["applied_per_account"], json!({"A": 2}));
    assert_eq!(stats["seed"], json!(7));
    assert_eq!(stats["rates"]["500"], json!(0.5));
}

fn parse(args: &[&str]) -> Result<FaultArgs, clap::Error> {
    let argv = ["accountsync-sandbox", "--token", "t"].into_iter();
    match Cli::try_parse_from(argv.chain(args.iter().copied()))?.into_command() {
        Command::Serve(serve) => Ok(*serve.faults),
        Command::Demo(_) => Err(clap::Error::new(clap::error::ErrorKind::InvalidValue)),
    }
}

#[test]
fn flags() -> anyhow::Result<()> {
    let none = parse(&[])?;
    assert_eq!(none.rates(), Rates::default());
    assert_eq!((none.seed, none.slow_ms, none.jitter_ms), (None, 35_000, 0));
    let all = parse(&[
        "--fault-500",
        "0.1",
        "--fault-503",
        "0.1",
        "--fault-429",
        "0.1",
        "--fault-reset",
        "0.1",
        "--fault-slow",
        "0.1",
        "--fault-applied-drop",
        "0.5",
        "--seed",
        "42",
        "--slow-ms",
        "1000",
        "--jitter-ms",
        "20",
    ])?;
    assert_eq!(all.rates().applied_drop, 0.5);
    assert_eq!(all.rates().error_500, 0.1);
    assert_eq!((all.seed, all.slow_ms, all.jitter_ms), (Some(42), 1000, 20));
    let faults = all.build()?;
    assert_eq!(faults.config_json()["seed"], json!(42));
    assert!(parse(&["--fault-500", "1.5"]).is_err());
    assert!(parse(&["--fault-reset", "x"]).is_err());
    // Each rate fine, the sum is not: refused when the faults are built.
    let over = parse(&["--fault-500", "0.7", "--fault-503", "0.7"])?;
    assert!(over.build().is_err());
    Ok(())
}
