//! Tests of the dataset fetch path with small zips built here (no network).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use profiled_train::Error;
use profiled_train::fetch::{
    self, FetchOptions, FetchOutcome, MARKER, ML_100K, extract_members, is_complete, sha256_file,
    verify_sha256,
};

fn build_zip(path: &Path, members: &[(&str, &str)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(text.as_bytes()).unwrap();
    }
    z.finish().unwrap();
}

const P: &str = "recbole/dataset_example/ml-100k/";

fn full_members() -> Vec<(String, &'static str)> {
    vec![
        (
            format!("{P}ml-100k.inter"),
            "user_id:token\titem_id:token\n1\t2\n",
        ),
        (format!("{P}ml-100k.user"), "user_id:token\n1\n"),
        (format!("{P}ml-100k.item"), "item_id:token\n2\n"),
        (format!("{P}ml-100k.kg"), "x\n"),
        ("recbole/__init__.py".to_string(), "\n"),
    ]
}

#[test]
fn extracts_only_the_dataset_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("w.whl");
    let m = full_members();
    let refs: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    build_zip(&wheel, &refs);
    let out = tmp.path().join("out");
    let (files, bytes) = extract_members(&wheel, P, ML_100K.required, &out, false).unwrap();
    assert_eq!(files, 4);
    assert!(bytes > 0);
    assert_eq!(
        std::fs::read_to_string(out.join("ml-100k.inter")).unwrap(),
        "user_id:token\titem_id:token\n1\t2\n"
    );
    assert!(!out.join("__init__.py").exists());
}

#[test]
fn missing_archive_member_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("w.whl");
    build_zip(
        &wheel,
        &[
            (&format!("{P}ml-100k.inter"), "a\n"),
            (&format!("{P}ml-100k.item"), "b\n"),
        ],
    );
    let err =
        extract_members(&wheel, P, ML_100K.required, &tmp.path().join("o"), false).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(err.to_string().contains("ml-100k.user"), "{err}");

    std::fs::write(tmp.path().join("bad.whl"), b"not a zip").unwrap();
    let err = extract_members(
        &tmp.path().join("bad.whl"),
        P,
        &[],
        &tmp.path().join("o2"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
}

#[test]
fn sha_mismatch_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("recbole-1.2.1-py3-none-any.whl");
    let m = full_members();
    let refs: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    build_zip(&wheel, &refs);
    let actual = sha256_file(&wheel).unwrap();
    verify_sha256(&wheel, &actual).unwrap();
    verify_sha256(&wheel, &actual.to_uppercase()).unwrap();

    let data = tmp.path().join("data");
    let mut opts = FetchOptions::new(&data);
    opts.wheel = Some(wheel.clone());
    opts.progress = false;
    let err = fetch::fetch("ml-100k", &opts).unwrap_err();
    match &err {
        Error::ChecksumMismatch {
            expected,
            actual: a,
            ..
        } => {
            assert_eq!(expected, ML_100K.sha256);
            assert_eq!(a, &actual);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!data.join("ml-100k").exists());
    // No temporary folders are left behind.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[test]
fn sha256_of_known_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn complete_folders_are_not_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ml-100k");
    std::fs::create_dir_all(&dir).unwrap();
    for r in ML_100K.required {
        std::fs::write(dir.join(r), "x").unwrap();
    }
    assert!(!is_complete(&dir, &ML_100K));
    std::fs::write(dir.join(MARKER), format!("{}\n", ML_100K.sha256)).unwrap();
    assert!(is_complete(&dir, &ML_100K));
    let mut opts = FetchOptions::new(tmp.path());
    opts.python = "/nonexistent/python3".into();
    opts.progress = false;
    assert_eq!(
        fetch::fetch("ml-100k", &opts).unwrap(),
        FetchOutcome::AlreadyPresent(dir.clone())
    );
    // Incomplete → it tries to fetch, and a missing python is a clear error.
    std::fs::remove_file(dir.join("ml-100k.user")).unwrap();
    let err = fetch::fetch("ml-100k", &opts).unwrap_err();
    assert!(matches!(err, Error::Fetch(_)), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(err.to_string().contains("pip"), "{err}");
}

#[test]
fn unknown_dataset_and_missing_wheel() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = FetchOptions::new(tmp.path());
    opts.progress = false;
    assert!(matches!(
        fetch::fetch("ml-20m", &opts).unwrap_err(),
        Error::UnknownDataset { .. }
    ));
    opts.wheel = Some(tmp.path().join("nope.whl"));
    assert!(matches!(
        fetch::fetch("ml-100k", &opts).unwrap_err(),
        Error::MissingFile { .. }
    ));
}
