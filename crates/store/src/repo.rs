//! The repository layout on disk: `<root>/<name>/<version>/` with a
//! `labels.json` per model, and atomic publishing.
//!
//! Paths cannot escape the repository: names with `..`, separators or an
//! absolute form are refused before any file is touched
//! ([`check_relative`], [`validate_model_name`], [`parse_version`]), and
//! every model directory, version directory and file in it is resolved
//! (symlinks followed) and must stay under the resolved root
//! ([`confined`], [`check_version_dir`]). A model directory that escapes is
//! skipped by [`list_models`]; a version that escapes is refused at load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// File name of the per-model labels file (`{"stable": 3, "canary": 4}`).
pub const LABELS_FILE: &str = "labels.json";

/// Checks a model name: 1–64 characters of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(crate::error::shown(name)))
    }
}

/// Checks a label name: 1–32 characters of `[a-z0-9_-]`.
pub fn validate_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidLabel(crate::error::shown(label)))
    }
}

/// Parses a version directory name: a positive integer without sign or
/// leading zeros (`"3"`, not `"03"`, `"+3"` or `"0"`).
pub fn parse_version(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&v| v > 0)
}

/// Checks a path named by a request, an admin call or a config key relative
/// to the repository: not empty, not absolute, no `..`, `.` or root/prefix
/// components.
pub fn check_relative(name: &Path) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::PathEscape {
            path: name.to_path_buf(),
            why: why.to_string(),
            root: PathBuf::new(),
        })
    };
    if name.as_os_str().is_empty() {
        return bad("empty path");
    }
    // `Path::components` drops interior `.`: look at the raw segments too.
    if name
        .as_os_str()
        .as_encoded_bytes()
        .split(|&b| b == b'/' || b == b'\\')
        .any(|seg| seg == b".")
    {
        return bad("`.` is not allowed in a repository path");
    }
    for c in name.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return bad("`..` is not allowed in a repository path"),
            Component::CurDir => return bad("`.` is not allowed in a repository path"),
            Component::RootDir | Component::Prefix(_) => {
                return bad("absolute paths are not allowed: name a path inside the repository");
            }
        }
    }
    Ok(())
}

/// Resolves `path` (following every symlink) and checks that it stays under
/// the resolved `root`; returns the resolved path.
pub fn confined(root: &Path, path: &Path) -> Result<PathBuf> {
    let root_r = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    confined_in(&root_r, path)
}

fn confined_in(root_r: &Path, path: &Path) -> Result<PathBuf> {
    let resolved = std::fs::canonicalize(path).map_err(|e| Error::PathEscape {
        path: path.to_path_buf(),
        why: format!("cannot be resolved ({e}), e.g. a dangling symlink"),
        root: root_r.to_path_buf(),
    })?;
    if resolved.starts_with(root_r) {
        Ok(resolved)
    } else {
        Err(Error::PathEscape {
            path: path.to_path_buf(),
            why: format!("resolves to {}, outside the repository", resolved.display()),
            root: root_r.to_path_buf(),
        })
    }
}

/// Checks a version directory before it is loaded: the directory and every
/// entry below it (model files, indexes) resolve inside the repository
/// `root`. The first offender is named in the error.
pub fn check_version_dir(root: &Path, dir: &Path) -> Result<()> {
    let root_r = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    fn walk(root_r: &Path, dir: &Path, depth: usize) -> Result<()> {
        let resolved = confined_in(root_r, dir)?;
        if depth > 4 || !resolved.is_dir() {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
            .collect::<Result<_>>()?;
        entries.sort();
        for p in entries {
            walk(root_r, &p, depth + 1)?;
        }
        Ok(())
    }
    walk(&root_r, dir, 0)
}

/// Warns once per path about a model directory skipped for escaping.
fn warn_escape_once(e: &Error) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let msg = e.to_string();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() < 1024 && seen.insert(msg.clone()) {
        tracing::warn!(error = %msg, "model directory skipped");
    }
}

/// Model names in the repository (valid names of directories), sorted.
/// A missing root gives an empty list. Directories that resolve outside the
/// root (symlinks) are skipped with a warning.
pub fn list_models(root: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let root_r = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_model_name(&name).is_ok() && entry.path().is_dir() {
            match confined_in(&root_r, &entry.path()) {
                Ok(_) => out.push(name),
                Err(e) => warn_escape_once(&e),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Published versions of one model, ascending. Temp directories (names
/// starting with `.`) and anything that is not a positive integer are ignored.
pub fn list_versions(model_dir: &Path) -> Result<Vec<u64>> {
    let rd = match std::fs::read_dir(model_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(model_dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(model_dir, e))?;
        let Some(v) = entry.file_name().to_str().and_then(parse_version) else {
            continue;
        };
        if entry.path().is_dir() {
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What a version directory holds, to tell whether it changed since a
/// failed load: a hash of every entry's (name, length, modification time),
/// and the newest modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    /// Hash of the sorted (name, length, mtime) triples.
    pub hash: u64,
    /// The newest modification time of an entry (or of the directory).
    pub newest: Option<SystemTime>,
}

/// The [`DirStamp`] of `dir` (an unreadable directory hashes as empty).
pub fn dir_stamp(dir: &Path) -> DirStamp {
    use std::hash::{Hash, Hasher};
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let mut entries: Vec<(std::ffi::OsString, u64, Option<SystemTime>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().ok();
                    let t = m.as_ref().and_then(|m| m.modified().ok());
                    (e.file_name(), m.map_or(0, |m| m.len()), t)
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    let mut h = std::hash::DefaultHasher::new();
    for (name, len, t) in &entries {
        name.hash(&mut h);
        len.hash(&mut h);
        t.hash(&mut h);
        if t.is_some() && *t > newest {
            newest = *t;
        }
    }
    DirStamp {
        hash: h.finish(),
        newest,
    }
}

/// Reads `<model_dir>/labels.json`; a missing file means no labels.
pub fn read_labels(model_dir: &Path) -> Result<BTreeMap<String, u64>> {
    check_model_dir(model_dir)?;
    let path = model_dir.join(LABELS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let labels: BTreeMap<String, u64> = serde_json::from_str(&text).map_err(|e| Error::Labels {
        path: path.clone(),
        message: format!("expected a JSON object of label -> version: {e}"),
    })?;
    for (label, &v) in &labels {
        validate_label(label).map_err(|e| Error::Labels {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if v == 0 {
            return Err(Error::Labels {
                path: path.clone(),
                message: format!("label {label:?}: version must be >= 1"),
            });
        }
    }
    Ok(labels)
}

/// Writes `<model_dir>/labels.json` atomically (temp file + rename).
pub fn write_labels(model_dir: &Path, labels: &BTreeMap<String, u64>) -> Result<()> {
    check_model_dir(model_dir)?;
    let path = model_dir.join(LABELS_FILE);
    let text = serde_json::to_string_pretty(labels)
        .map_err(|e| Error::Internal(format!("labels: {e}")))?;
    let tmp = model_dir.join(format!(".{LABELS_FILE}.{}.tmp", unique_suffix()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(&path, e)
    })
}

/// A model directory `<root>/<name>` (when it exists) and its labels file
/// (when it exists) must resolve inside `<root>`.
fn check_model_dir(model_dir: &Path) -> Result<()> {
    let (Some(root), true) = (model_dir.parent(), model_dir.exists()) else {
        return Ok(());
    };
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let root_r = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    confined_in(&root_r, model_dir)?;
    let labels = model_dir.join(LABELS_FILE);
    if labels.symlink_metadata().is_ok() {
        confined_in(&root_r, &labels)?;
    }
    Ok(())
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| Error::io(&from, e))?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
            let f = std::fs::File::open(&to).map_err(|e| Error::io(&to, e))?;
            f.sync_all().map_err(|e| Error::io(&to, e))?;
        }
    }
    Ok(())
}

/// Publishes the model version in `src` (a folder with `model.json` and
/// `model.safetensors`, plus optional index files) as the next version of
/// model `name` in the repository `repo`: copies everything into a temp
/// directory inside `<repo>/<name>/` (ignored by scanners because its name
/// starts with `.`), then renames it to `<max version + 1>`. Published
/// directories are never modified. Returns the new version and its path.
pub fn publish(src: &Path, repo: &Path, name: &str) -> Result<(u64, PathBuf)> {
    validate_model_name(name)?;
    for file in ["model.json", "model.safetensors"] {
        if !src.join(file).is_file() {
            return Err(Error::Publish(format!(
                "{}: missing {file} (a model version folder holds model.json and model.safetensors)",
                src.display()
            )));
        }
    }
    let model_dir = repo.join(name);
    std::fs::create_dir_all(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
    let tmp = model_dir.join(format!(".publish-{}", unique_suffix()));
    if let Err(e) = copy_tree(src, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let mut version = list_versions(&model_dir)?.last().copied().unwrap_or(0) + 1;
    for _ in 0..1000 {
        let dst = model_dir.join(version.to_string());
        if dst.exists() {
            version += 1;
            continue;
        }
        match std::fs::rename(&tmp, &dst) {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(&model_dir) {
                    let _ = d.sync_all();
                }
                return Ok((version, dst));
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    || e.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                version += 1;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(Error::io(dst, e));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Err(Error::Publish(format!(
        "{}: could not find a free version number",
        model_dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        assert_eq!(parse_version("3"), Some(3));
        assert_eq!(parse_version("03"), None);
        assert_eq!(parse_version("0"), None);
        assert_eq!(parse_version("+3"), None);
        assert_eq!(parse_version(".publish-1"), None);
        assert!(validate_model_name("ml-100k").is_ok());
        assert!(validate_model_name("..").is_err());
        assert!(validate_model_name("a/b").is_err());
        assert!(validate_label("canary").is_ok());
        assert!(validate_label("Canary").is_err());
    }

    #[test]
    fn publish_numbers_versions_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("model.json"), "{}").unwrap();
        std::fs::write(src.join("model.safetensors"), "x").unwrap();
        let repo = dir.path().join("models");
        let (v1, p1) = publish(&src, &repo, "m").unwrap();
        let (v2, _) = publish(&src, &repo, "m").unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert!(p1.join("model.json").is_file());
        assert_eq!(list_versions(&repo.join("m")).unwrap(), vec![1, 2]);
        // No temp directories are left behind.
        let leftovers = std::fs::read_dir(repo.join("m"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(leftovers, 0);
        assert!(publish(&dir.path().join("nope"), &repo, "m").is_err());
        assert!(publish(&src, &repo, "../x").is_err());
    }

    #[test]
    fn relative_names_cannot_escape() {
        assert!(check_relative(Path::new("m/3/model.json")).is_ok());
        for bad in ["", "../x", "m/../../x", "/etc/passwd", "./m", "m/./3"] {
            let e = check_relative(Path::new(bad)).unwrap_err();
            assert!(matches!(e, Error::PathEscape { .. }), "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_resolved_and_confined() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::create_dir_all(outside.join("v")).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        std::fs::write(root.join("shared/model.json"), "{}").unwrap();
        std::fs::write(outside.join("v/model.json"), "{}").unwrap();

        // A symlink that stays inside the root is fine.
        symlink(root.join("shared/model.json"), root.join("m/1/model.json")).unwrap();
        assert!(check_version_dir(&root, &root.join("m/1")).is_ok());
        // A relative symlink too.
        symlink("../../shared", root.join("m/1/more")).unwrap();
        assert!(check_version_dir(&root, &root.join("m/1")).is_ok());

        // A file symlinked outside the root refuses the version, naming it.
        symlink(outside.join("secret"), root.join("m/1/model.safetensors")).unwrap();
        let e = check_version_dir(&root, &root.join("m/1")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("model.safetensors"), "{msg}");
        assert!(msg.contains("outside the repository"), "{msg}");
        std::fs::remove_file(root.join("m/1/model.safetensors")).unwrap();

        // `..` through a relative symlink.
        symlink("../../../outside/secret", root.join("m/1/items.index")).unwrap();
        assert!(check_version_dir(&root, &root.join("m/1")).is_err());
        std::fs::remove_file(root.join("m/1/items.index")).unwrap();

        // A dangling symlink cannot be resolved: refused.
        symlink(root.join("nope"), root.join("m/1/users.index")).unwrap();
        let e = check_version_dir(&root, &root.join("m/1")).unwrap_err();
        assert!(e.to_string().contains("cannot be resolved"), "{e}");
        std::fs::remove_file(root.join("m/1/users.index")).unwrap();

        // A version directory symlinked outside.
        symlink(outside.join("v"), root.join("m/2")).unwrap();
        assert!(check_version_dir(&root, &root.join("m/2")).is_err());
        assert!(confined(&root, &root.join("m/1")).is_ok());

        // A model directory symlinked outside is not listed; inside is.
        symlink(&outside, root.join("evil")).unwrap();
        symlink(root.join("m"), root.join("alias")).unwrap();
        assert_eq!(list_models(&root).unwrap(), vec!["alias", "m", "shared"]);

        // Labels are neither read nor written through an escaping model dir
        // or labels file.
        assert!(read_labels(&root.join("evil")).is_err());
        assert!(write_labels(&root.join("evil"), &BTreeMap::new()).is_err());
        assert!(!outside.join(LABELS_FILE).exists());
        symlink(outside.join("secret"), root.join("m").join(LABELS_FILE)).unwrap();
        assert!(write_labels(&root.join("m"), &BTreeMap::new()).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "x"
        );

        // A repository root that is itself a symlink works.
        let link_root = dir.path().join("link-root");
        symlink(&root, &link_root).unwrap();
        assert!(check_version_dir(&link_root, &link_root.join("m/1")).is_ok());
    }

    #[test]
    fn labels_round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = BTreeMap::new();
        l.insert("stable".to_string(), 2u64);
        write_labels(dir.path(), &l).unwrap();
        assert_eq!(read_labels(dir.path()).unwrap(), l);
        std::fs::write(dir.path().join(LABELS_FILE), r#"{"BAD": 1}"#).unwrap();
        assert!(read_labels(dir.path()).is_err());
    }
}
