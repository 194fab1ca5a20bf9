//! The repository layout on disk: `<root>/<name>/<version>/` with a
//! `labels.json` per model, and atomic publishing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
        Err(Error::InvalidName(name.to_string()))
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
        Err(Error::InvalidLabel(label.to_string()))
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

/// Model names in the repository (valid names of directories), sorted.
/// A missing root gives an empty list.
pub fn list_models(root: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_model_name(&name).is_ok() && entry.path().is_dir() {
            out.push(name);
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

/// Reads `<model_dir>/labels.json`; a missing file means no labels.
pub fn read_labels(model_dir: &Path) -> Result<BTreeMap<String, u64>> {
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
