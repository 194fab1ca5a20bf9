//! `profilectl`: the command-line tool of profiled.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod data_cmd;
mod eval_cmd;
mod parity_cmd;
mod train_cmd;

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
    /// Train a profile model and write it as a new version.
    Train(Box<train_cmd::TrainArgs>),
    /// Re-write a model version as a new version (e.g. with f16 weights).
    Export(train_cmd::ExportArgs),
    /// Summarise a model version.
    Inspect(train_cmd::InspectArgs),
    /// Compare the serving encoder with the trainer's forward on every user and kernel path.
    Parity(parity_cmd::ParityArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Train(args) => train_cmd::run_train(*args),
        Command::Export(args) => train_cmd::run_export(args),
        Command::Inspect(args) => train_cmd::run_inspect(args),
        Command::Parity(args) => parity_cmd::run(args),
    }
}
