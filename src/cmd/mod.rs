//! One file per subcommand (xsv's habit): its arguments, its output, its `anyhow` errors.

pub mod cache;
pub mod check;
pub mod daemon;
pub mod docs;
pub mod logging;
pub mod run;
