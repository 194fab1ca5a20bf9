//! `profilectl`: the command-line tool of profiled.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod data_cmd;
mod eval_cmd;

/// profilectl — data, training, evaluation and client commands for profiled.
#[derive(Debug, Parser)]
#[command(name = "profilectl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Datasets: fetch public datasets into the data folder.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Evaluate a model and the baselines with the leave-one-out protocol.
    Eval(eval_cmd::EvalArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Eval(args) => eval_cmd::run(args),
    }
}
