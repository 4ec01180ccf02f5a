//! accountsync: CRM export -> normalized accounts -> diff against the last confirmed state ->
//! rate-limited PATCH requests -> cache and report. See ARCHITECTURE.md for the map.

// No input may panic the process: data errors are values (`Problem`, typed `Err`s).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod cache;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod inbox;
pub mod map;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod read;
pub mod record;
pub mod report;
pub mod schedule;
pub mod send;
pub mod validate;
