//! `profilectl data …`: fetching datasets.

/// `println!` that ignores a closed stdout (e.g. `| head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use profiled_train::fetch::{self, FetchOptions, FetchOutcome};

/// `profilectl data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a public dataset (e.g. `ml-100k`) into the data folder.
    Fetch(FetchArgs),
}

/// Arguments of `profilectl data fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Dataset name (fetchable: ml-100k).
    pub name: String,
    /// Folder that receives `<name>/` (git-ignored).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Use an already-downloaded wheel instead of running pip.
    #[arg(long)]
    pub wheel: Option<PathBuf>,
    /// Python interpreter for `-m pip`.
    #[arg(long, env = "PROFILED_PYTHON", default_value = "python3")]
    pub python: String,
    /// Fetch again even if the folder is complete.
    #[arg(long)]
    pub force: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs a `data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch(a) => {
            let opts = FetchOptions {
                data_dir: a.data_dir,
                python: a.python,
                wheel: a.wheel,
                force: a.force,
                progress: !a.quiet,
            };
            let outcome = fetch::fetch(&a.name, &opts)
                .with_context(|| format!("fetching dataset `{}`", a.name))?;
            match outcome {
                FetchOutcome::AlreadyPresent(dir) => {
                    say!("{} is already complete in {}", a.name, dir.display());
                }
                FetchOutcome::Fetched { dir, files, bytes } => {
                    say!(
                        "fetched {}: {files} files, {bytes} bytes in {}",
                        a.name,
                        dir.display()
                    );
                }
            }
            Ok(())
        }
    }
}
