//! `profilectl data fetch`: datasets shipped inside PyPI wheels.
//!
//! ML-100K in RecBole's atomic format ships in the `recbole==1.2.1` wheel.
//! We download the wheel with the machine's own `pip` (`python3 -m pip
//! download --no-deps --only-binary :all:`), verify its sha256, and extract
//! the dataset members with the `zip` crate. Extraction goes to a temporary
//! folder inside the data folder which is renamed into place once complete,
//! with a `.fetched` marker holding the wheel's digest; a complete folder is
//! never fetched again (idempotent). The dataset is never committed (licence).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A dataset that ships inside a PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelSource {
    /// Dataset name (and folder name under the data folder).
    pub name: &'static str,
    /// PyPI project.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Expected sha256 of the wheel (lower-case hex).
    pub sha256: &'static str,
    /// Archive folder whose files are extracted (ends with `/`).
    pub member_prefix: &'static str,
    /// Files that must be present in that folder.
    pub required: &'static [&'static str],
}

/// ML-100K in RecBole atomic format, from the `recbole==1.2.1` wheel.
pub const ML_100K: WheelSource = WheelSource {
    name: "ml-100k",
    package: "recbole",
    version: "1.2.1",
    sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    member_prefix: "recbole/dataset_example/ml-100k/",
    required: &["ml-100k.inter", "ml-100k.user", "ml-100k.item"],
};

/// All fetchable datasets.
pub const SOURCES: &[WheelSource] = &[ML_100K];

/// Name of the completeness marker written last into a fetched folder.
pub const MARKER: &str = ".fetched";

/// Looks a fetchable dataset up by name.
pub fn source(name: &str) -> Option<&'static WheelSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// Options of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Folder that receives `<name>/`.
    pub data_dir: PathBuf,
    /// Python interpreter used for `-m pip` (default: `$PROFILED_PYTHON` or `python3`).
    pub python: String,
    /// Use this already-downloaded wheel instead of running pip.
    pub wheel: Option<PathBuf>,
    /// Fetch again even when the folder is complete.
    pub force: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl FetchOptions {
    /// Defaults for a data folder: python from `$PROFILED_PYTHON` or `python3`,
    /// pip download, no force, progress on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        FetchOptions {
            data_dir: data_dir.into(),
            python: std::env::var("PROFILED_PYTHON").unwrap_or_else(|_| "python3".into()),
            wheel: None,
            force: false,
            progress: true,
        }
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The folder was already complete; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// The dataset was fetched and extracted.
    Fetched {
        /// The dataset folder.
        dir: PathBuf,
        /// Files extracted.
        files: usize,
        /// Bytes extracted.
        bytes: u64,
    },
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Errors with [`Error::ChecksumMismatch`] unless the file's sha256 is `expected`.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

/// Extracts the files under `prefix` of a zip archive into `dest` (created),
/// checking that every name in `required` was among them. Returns
/// (files, bytes) written.
pub fn extract_members(
    archive: &Path,
    prefix: &str,
    required: &[&str],
    dest: &Path,
    progress: bool,
) -> Result<(usize, u64)> {
    let arch_err = |message: String| Error::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| arch_err(format!("not a readable zip: {e}")))?;
    // Select members first, so the progress bar knows the total.
    let mut selected: Vec<(usize, PathBuf, u64)> = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| arch_err(format!("entry {i}: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let Ok(name) = entry.name() else { continue };
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(safe) = entry.enclosed_name() else {
            return Err(arch_err(format!("unsafe member path `{name}`")));
        };
        let Ok(rel_path) = safe.strip_prefix(prefix.trim_end_matches('/')) else {
            return Err(arch_err(format!("unsafe member path `{name}`")));
        };
        if rel.is_empty() {
            continue;
        }
        selected.push((i, rel_path.to_path_buf(), entry.size()));
    }
    for r in required {
        if !selected.iter().any(|(_, p, _)| p == Path::new(r)) {
            return Err(arch_err(format!("missing member `{prefix}{r}`")));
        }
    }
    let total: u64 = selected.iter().map(|(_, _, s)| s).sum();
    let pb = if progress {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template("extracting {bar:30} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let mut written = 0u64;
    for (i, rel, _) in &selected {
        let out_path = dest.join(rel);
        if let Some(parent) = out_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        pb.set_message(rel.display().to_string());
        let mut entry = zip
            .by_index(*i)
            .map_err(|e| arch_err(format!("entry {i}: {e}")))?;
        let out = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut out = pb.wrap_write(std::io::BufWriter::new(out));
        let n = std::io::copy(&mut entry, &mut out)
            .map_err(|e| arch_err(format!("extracting `{}`: {e}", rel.display())))?;
        out.flush().map_err(|e| Error::io(&out_path, e))?;
        written += n;
    }
    pb.finish_and_clear();
    Ok((selected.len(), written))
}

/// True when `dir` holds a complete fetch of `src` (marker with the right
/// digest and every required file).
pub fn is_complete(dir: &Path, src: &WheelSource) -> bool {
    let marker_ok = std::fs::read_to_string(dir.join(MARKER))
        .map(|s| s.trim() == src.sha256)
        .unwrap_or(false);
    marker_ok && src.required.iter().all(|r| dir.join(r).is_file())
}

fn run_pip(python: &str, src: &WheelSource, into: &Path, progress: bool) -> Result<PathBuf> {
    // Is there a python with pip at all?
    match Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Fetch(format!(
                "`{python}` not found: ML-100K is downloaded with pip; install python3 and pip \
                 (or set PROFILED_PYTHON, or pass --wheel with a downloaded \
                 {}-{} wheel)",
                src.package, src.version
            )));
        }
        Err(e) => return Err(Error::Fetch(format!("cannot run `{python}`: {e}"))),
        Ok(out) if !out.status.success() => {
            return Err(Error::Fetch(format!(
                "`{python} -m pip` does not work ({}): install pip for {python} \
                 (e.g. `apt-get install python3-pip`) or pass --wheel",
                last_lines(&out.stderr, 3)
            )));
        }
        Ok(_) => {}
    }
    let spec = format!("{}=={}", src.package, src.version);
    let spinner = if progress {
        let pb = ProgressBar::new_spinner();
        pb.set_message(format!("pip download {spec}"));
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    } else {
        ProgressBar::hidden()
    };
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .arg("-d")
        .arg(into)
        .arg(&spec)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Fetch(format!("cannot run `{python} -m pip download`: {e}")))?;
    spinner.finish_and_clear();
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "`pip download {spec}` failed — is the network (PyPI) reachable? \
             You can also download the wheel elsewhere and pass --wheel FILE.\n{}",
            last_lines(&out.stderr, 6)
        )));
    }
    let prefix = format!("{}-{}-", src.package, src.version);
    let rd = std::fs::read_dir(into).map_err(|e| Error::io(into, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(into, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(Error::Fetch(format!(
        "pip reported success but no {prefix}*.whl is in {}",
        into.display()
    )))
}

fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fetches a dataset by name into `opts.data_dir/<name>` (see the module docs).
pub fn fetch(name: &str, opts: &FetchOptions) -> Result<FetchOutcome> {
    let src = source(name).ok_or_else(|| Error::UnknownDataset {
        name: name.to_string(),
        hint: format!(
            "cannot fetch it; fetchable: {}",
            SOURCES
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let dest = opts.data_dir.join(src.name);
    if !opts.force && is_complete(&dest, src) {
        return Ok(FetchOutcome::AlreadyPresent(dest));
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| Error::io(&opts.data_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".fetch-{}-", src.name))
        .tempdir_in(&opts.data_dir)
        .map_err(|e| Error::io(&opts.data_dir, e))?;
    let wheel = match &opts.wheel {
        Some(w) => {
            if !w.is_file() {
                return Err(Error::MissingFile {
                    path: w.clone(),
                    hint: "the --wheel file".into(),
                });
            }
            w.clone()
        }
        None => {
            let dl = tmp.path().join("download");
            std::fs::create_dir_all(&dl).map_err(|e| Error::io(&dl, e))?;
            run_pip(&opts.python, src, &dl, opts.progress)?
        }
    };
    verify_sha256(&wheel, src.sha256)?;
    let staged = tmp.path().join(src.name);
    let (files, bytes) = extract_members(
        &wheel,
        src.member_prefix,
        src.required,
        &staged,
        opts.progress,
    )?;
    let marker = staged.join(MARKER);
    std::fs::write(&marker, format!("{}\n", src.sha256)).map_err(|e| Error::io(&marker, e))?;
    if dest.exists() {
        // Incomplete (or forced): replace it.
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    std::fs::rename(&staged, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(FetchOutcome::Fetched {
        dir: dest,
        files,
        bytes,
    })
}
