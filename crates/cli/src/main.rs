//! `profilectl`: the command-line tool of profiled.
#![forbid(unsafe_code)]

use clap::Parser;

/// profilectl — data, training, evaluation and client commands for profiled.
#[derive(Debug, Parser)]
#[command(name = "profilectl", version, about)]
enum Command {}

fn main() -> anyhow::Result<()> {
    match Command::parse() {}
}
