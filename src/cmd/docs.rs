//! `completions` and `man`: text generated from the clap definition, so it cannot drift.

use anyhow::Context;
use clap::CommandFactory;

use crate::{Cli, VERSION};

/// `Cli::command()` without its hidden subcommands: clap_complete offers every subcommand,
/// hidden or not (clap-rs/clap#1335), and `man` is for packaging, not for the Tab key. clap
/// has no way to remove a subcommand, so the root is put together again from `Cli`'s own
/// arguments and visible subcommands; nothing is restated, so it cannot drift from `Cli`.
pub fn completion_command() -> clap::Command {
    let cli = Cli::command();
    let mut cmd = clap::Command::new("accountsync")
        .version(VERSION)
        .args(cli.get_arguments().cloned());
    if let Some(about) = cli.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The roff page of the whole command, or of one visible subcommand (named
/// `accountsync-run(1)` in the main page's SUBCOMMANDS section). clap's own `help`
/// subcommand is left out, as `clap_mangen::generate_to` does.
pub fn man_page(command: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let visible = || cmd.get_subcommands().filter(|s| !s.is_hide_set());
            match visible().find(|s| s.get_name() == name) {
                Some(sub) => sub.clone(),
                None => {
                    let names: Vec<&str> = visible().map(|s| s.get_name()).collect();
                    anyhow::bail!("no man page for {name:?}; pages: {}", names.join(", "))
                }
            }
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("accountsync {VERSION}"))
        .manual("accountsync manual")
        .render(&mut roff)
        .context("cannot render the man page")?;
    Ok(roff)
}
