//! The programs the tests run: `profiled` and `profilectl` built from the
//! current tree with the tests' own cargo profile (so `CARGO_TARGET_DIR` and
//! `--profile` of the `cargo test` run decide which binary is used), the
//! repository root, and the Python interpreter of `tests/setup-python`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (`tests/e2e/../..`), canonical when it can be
/// resolved.
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The profile directory of the running test executable
/// (`<target>/<profile>/deps/<test>-<hash>` → `<target>/<profile>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no profile directory")?
        .to_path_buf())
}

/// The cargo profile that builds into `profile_dir` (`debug` is `dev`).
fn cargo_profile(profile_dir: &Path) -> String {
    match profile_dir.file_name().and_then(|s| s.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(p) => p.to_string(),
    }
}

/// `cargo build -q -p PACKAGE --bin BIN --profile PROFILE` (with `$CARGO`,
/// so the target directory of the test run is used).
fn cargo_build(package: &str, bin: &str, profile: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .args(["--profile", profile])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        bail!("cargo build of {bin} failed: {status:?}");
    }
    Ok(())
}

/// The `profiled` binary: `$PROFILED_BIN`, or `profiled` in the test
/// executable's profile directory, built there (once per test process) when
/// missing or older than a source file it is built from.
pub fn profiled_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PROFILED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let profile_dir = profile_dir()?;
    let bin = profile_dir.join("profiled");
    static BUILD: std::sync::Once = std::sync::Once::new();
    let mut failed = None;
    BUILD.call_once(|| {
        if !is_stale(&bin) {
            return;
        }
        if let Err(e) = cargo_build("profiled-server", "profiled", &cargo_profile(&profile_dir)) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if !bin.is_file() {
        bail!("{} not found", bin.display());
    }
    Ok(bin)
}

/// The `profilectl` binary: `$PROFILECTL_BIN`, or built with the test's own
/// profile into its profile directory (cargo decides whether anything needs
/// building; a no-op when fresh, as under `tests/run`, which builds it
/// first).
pub fn profilectl_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROFILECTL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let profile_dir = profile_dir()?;
    cargo_build("profiled-cli", "profilectl", &cargo_profile(&profile_dir))?;
    let bin = profile_dir.join("profilectl");
    if !bin.is_file() {
        bail!("{} not built", bin.display());
    }
    Ok(bin)
}

/// True when `bin` is missing or older than a source file it is built from.
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = repo_root();
    let dirs = [
        "crates/server",
        "crates/store",
        "crates/model/src",
        "crates/proto",
        "kernels/src",
        "proto",
    ];
    fn newer(dir: &Path, t: std::time::SystemTime) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                newer(&p, t)
            } else {
                e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > t)
            }
        })
    }
    dirs.iter().any(|d| newer(&root.join(d), built))
}

/// The Python interpreter of the test venv, `$PROFILED_TEST_PYTHON`
/// (`tests/setup-python` creates `.venv` with grpcio, grpcio-tools,
/// yamllint, kubernetes-validate, hadolint and kubectl; `tests/run` sets the
/// variable). Panics, saying how to set it up, when it is unset or missing.
pub fn test_python() -> PathBuf {
    let p = std::env::var_os("PROFILED_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "PROFILED_TEST_PYTHON is not set: run the suite with tests/run \
             (it creates .venv via tests/setup-python — grpcio, grpcio-tools, yamllint, \
             kubernetes-validate, hadolint, kubectl — and sets it)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "PROFILED_TEST_PYTHON={} does not exist: run tests/setup-python",
        p.display()
    );
    p
}
