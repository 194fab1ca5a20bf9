//! `profilectl`: the command-line tool of profiled.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod client_cmd;
mod data_cmd;
mod eval_cmd;
mod health_cmd;
mod index_cmd;
mod parity_cmd;
mod train_cmd;
mod users_cmd;

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
    /// Embedding indexes of a model version (items.index, users.index, ANN sidecars).
    #[command(subcommand)]
    Index(index_cmd::IndexCommand),
    /// Compare the serving encoder with the trainer's forward on every user and kernel path.
    Parity(parity_cmd::ParityArgs),
    /// Profile vectors from a running profiled (gRPC client).
    Embed(client_cmd::EmbedArgs),
    /// Nearest items or lookalike users from a running profiled (gRPC client).
    Search(client_cmd::SearchArgs),
    /// Which dimensions and tokens drove a profile (gRPC client).
    Explain(client_cmd::ExplainArgs),
    /// Store events and field values of a user on a running profiled (live state).
    Track(users_cmd::TrackArgs),
    /// A user's live state on a running profiled: get, delete.
    #[command(subcommand)]
    User(users_cmd::UserCommand),
    /// Models, versions and their states on a running profiled (gRPC client).
    Models(client_cmd::ModelsArgs),
    /// Copy a model version into a repository atomically (next version number).
    Publish(client_cmd::PublishArgs),
    /// gRPC health check of a running profiled: exit 0 when SERVING, 1 otherwise.
    Health(health_cmd::HealthArgs),
    /// Fetch ML-100K, train, publish into models/, start profiled, print calls.
    Quickstart(client_cmd::QuickstartArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Train(args) => train_cmd::run_train(*args),
        Command::Export(args) => train_cmd::run_export(args),
        Command::Inspect(args) => train_cmd::run_inspect(args),
        Command::Parity(args) => parity_cmd::run(args),
        Command::Index(cmd) => index_cmd::run(cmd),
        Command::Embed(args) => client_cmd::run_embed(args),
        Command::Search(args) => client_cmd::run_search(args),
        Command::Explain(args) => client_cmd::run_explain(args),
        Command::Track(args) => users_cmd::run_track(args),
        Command::User(cmd) => users_cmd::run_user(cmd),
        Command::Models(args) => client_cmd::run_models(args),
        Command::Publish(args) => client_cmd::run_publish(args),
        Command::Health(args) => health_cmd::run(args),
        Command::Quickstart(args) => client_cmd::run_quickstart(args),
    }
}
