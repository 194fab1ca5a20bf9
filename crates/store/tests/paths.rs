//! Model paths cannot escape the repository: versions whose files (or the
//! version directory itself) are symlinks resolving outside the root are
//! refused with a reason naming the file, and never replace a serving
//! version; model directories symlinked outside are not served at all.

#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::Path;

use profiled_model::testing::{SyntheticSpec, write_synthetic_model};
use profiled_store::{Selector, Store, StoreConfig, VersionState};

fn make_version(dir: &Path, seed: u64) {
    let spec = SyntheticSpec {
        seed,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(dir, &spec).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_leaving_the_repository_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    let outside = tmp.path().join("outside");
    make_version(&repo.join("m/1"), 1);
    // Version 2: a valid model whose weights file is a symlink to a valid
    // model's weights outside the repository.
    make_version(&outside.join("v"), 2);
    std::fs::create_dir_all(repo.join("m/2")).unwrap();
    std::fs::copy(outside.join("v/model.json"), repo.join("m/2/model.json")).unwrap();
    symlink(
        outside.join("v/model.safetensors"),
        repo.join("m/2/model.safetensors"),
    )
    .unwrap();
    // A whole model symlinked from outside.
    make_version(&outside.join("other/1"), 3);
    symlink(outside.join("other"), repo.join("other")).unwrap();

    let store = Store::new(StoreConfig::new(&repo));
    store.scan().await.unwrap();
    // Version 1 serves; version 2 is FAILED with the reason naming the file.
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().version, 1);
    let snap = store.snapshot("m").unwrap();
    let v2 = snap.versions.iter().find(|v| v.version == 2).unwrap();
    assert_eq!(v2.status.state, VersionState::Failed);
    assert!(
        v2.status.reason.contains("model.safetensors")
            && v2.status.reason.contains("outside the repository"),
        "{}",
        v2.status.reason
    );
    assert!(store.resolve("other", &Selector::Default).is_err());
    assert!(!store.model_names().contains(&"other".to_string()));

    // Loading it explicitly is refused the same way.
    let e = store.reload("m", Some(2)).await.unwrap_err();
    assert!(e.to_string().contains("outside the repository"), "{e}");

    // The same files copied in (no symlink) load fine.
    std::fs::remove_file(repo.join("m/2/model.safetensors")).unwrap();
    std::fs::copy(
        outside.join("v/model.safetensors"),
        repo.join("m/2/model.safetensors"),
    )
    .unwrap();
    store.reload("m", Some(2)).await.unwrap();
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().version, 2);
}
