//! Store behaviour on a real repository with synthetic model versions.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use profiled_model::testing::{SyntheticSpec, write_synthetic_model};
use profiled_store::{Selector, Store, StoreConfig, VersionPolicy, VersionState, publish};

fn make_version(dir: &Path, seed: u64) {
    let spec = SyntheticSpec {
        seed,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(dir, &spec).unwrap();
}

fn make_broken(dir: &Path, seed: u64) {
    make_version(dir, seed);
    // Break the golden check: flip every expected profile.
    let p = dir.join("model.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for g in j["golden"].as_array_mut().unwrap() {
        for x in g["profile"].as_array_mut().unwrap() {
            *x = serde_json::json!(-x.as_f64().unwrap());
        }
    }
    std::fs::write(&p, serde_json::to_string(&j).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_swap_refuse_label_unload() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    let src1 = tmp.path().join("src1");
    make_version(&src1, 1);
    assert_eq!(publish(&src1, &repo, "m").unwrap().0, 1);

    let store = Store::new(StoreConfig::new(&repo));
    assert!(!store.any_ready());
    store.scan().await.unwrap();
    assert!(store.all_ready());
    let g1 = store.resolve("", &Selector::Default).unwrap();
    assert_eq!((g1.model.as_str(), g1.version), ("m", 1));

    // A new version becomes the default; the old Arc stays usable.
    let src2 = tmp.path().join("src2");
    make_version(&src2, 2);
    publish(&src2, &repo, "m").unwrap();
    store.scan().await.unwrap();
    let g2 = store.resolve("m", &Selector::Default).unwrap();
    assert_eq!(g2.version, 2);
    assert_ne!(g1.id, g2.id);
    assert_eq!(g1.version, 1);
    // latest policy: version 1 was unloaded.
    assert!(store.resolve("m", &Selector::Version(1)).is_err());

    // A broken version is refused and never replaces the serving one.
    let bad = tmp.path().join("bad");
    make_broken(&bad, 3);
    publish(&bad, &repo, "m").unwrap();
    store.scan().await.unwrap();
    let snap = store.snapshot("m").unwrap();
    let v3 = snap.versions.iter().find(|v| v.version == 3).unwrap();
    assert_eq!(v3.status.state, VersionState::Failed);
    assert!(v3.status.reason.contains("golden"), "{}", v3.status.reason);
    assert_eq!(v3.status.failures, 1);
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().id, g2.id);
    // Not retried by the next scan.
    store.scan().await.unwrap();
    assert_eq!(store.snapshot("m").unwrap().versions[0].status.failures, 1);

    // Labels persist and resolve.
    store.set_label("m", "stable", Some(2)).unwrap();
    assert_eq!(
        store
            .resolve("m", &Selector::Label("stable".into()))
            .unwrap()
            .version,
        2
    );
    assert!(store.set_label("m", "canary", Some(3)).is_err());
    assert!(repo.join("m/labels.json").is_file());
    assert!(store.resolve("m", &Selector::Label("nope".into())).is_err());

    // Unload needs force for a labelled / only version.
    assert!(store.unload("m", 2, false).is_err());
    store.unload("m", 2, true).unwrap();
    assert!(
        store.resolve("m", &Selector::Default).is_err()
            || store.resolve("m", &Selector::Default).unwrap().version != 2
    );

    // Unknown model.
    assert!(store.resolve("other", &Selector::Default).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_falls_back_when_newest_is_broken_and_policies_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    make_version(&repo.join("m/1"), 1);
    make_broken(&repo.join("m/2"), 2);
    let store = Store::new(StoreConfig::new(&repo));
    store.scan().await.unwrap();
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().version, 1);

    let mut cfg = StoreConfig::new(&repo);
    cfg.default_policy = "pinned:1".parse::<VersionPolicy>().unwrap();
    let pinned = Store::new(cfg);
    pinned.scan().await.unwrap();
    assert_eq!(pinned.resolve("m", &Selector::Default).unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_picks_up_a_published_version() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    make_version(&repo.join("m/1"), 1);
    let mut cfg = StoreConfig::new(&repo);
    cfg.poll_interval = std::time::Duration::from_millis(200);
    cfg.debounce = std::time::Duration::from_millis(50);
    let store = Store::new(cfg);
    let _w = store.spawn_watcher();
    let src = tmp.path().join("src");
    make_version(&src, 7);
    for _ in 0..100 {
        if store.any_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    publish(&src, &repo, "m").unwrap();
    let mut version = 0;
    for _ in 0..100 {
        version = store
            .resolve("m", &Selector::Default)
            .map_or(0, |g| g.version);
        if version == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_version_is_unloading_while_a_request_holds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    for seed in [1, 2] {
        let src = tmp.path().join(format!("src{seed}"));
        make_version(&src, seed);
        publish(&src, &repo, "m").unwrap();
    }
    let mut cfg = StoreConfig::new(&repo);
    cfg.default_policy = VersionPolicy::LatestN(2);
    let store = Store::new(cfg);
    store.scan().await.unwrap();
    let state = |v: u64| {
        let snap = store.snapshot("m").unwrap();
        let s = snap.versions.iter().find(|x| x.version == v).unwrap();
        (
            s.status.state,
            s.status.generation_id,
            s.generation.is_some(),
        )
    };
    assert_eq!(state(1).0, VersionState::Ready);

    // A request holds version 1's generation while an operator unloads it.
    let held = store.resolve("m", &Selector::Version(1)).unwrap();
    store.unload("m", 1, false).unwrap();
    assert_eq!(state(1), (VersionState::Unloading, held.id, true));
    // No longer selectable, even while draining.
    assert!(store.resolve("m", &Selector::Version(1)).is_err());

    // The request ends: the generation is released and the state settles.
    drop(held);
    assert_eq!(state(1), (VersionState::Unloaded, 0, false));
    assert_eq!(state(2).0, VersionState::Ready);
}

/// F1 of the outside client's findings: a reload of a name with no
/// directory registered a ghost model, which took the default model away from
/// every request without a name. A refused admin call must change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reloads_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    make_version(&repo.join("m/1"), 1);
    let store = Store::new(StoreConfig::new(&repo));
    store.scan().await.unwrap();
    assert_eq!(store.default_model().as_deref(), Some("m"));

    for (model, version) in [
        ("m-typo", None),
        ("m-typo", Some(1)),
        ("m", Some(0)),
        ("m", Some(5)),
        ("m", Some(u64::MAX)),
        ("..", None),
        (".hidden", None),
        ("a/b", None),
    ] {
        let checked = store.check_reload(model, version);
        assert!(checked.is_err(), "{model:?} {version:?} was accepted");
        let err = store.reload(model, version).await.unwrap_err();
        assert_eq!(err.to_string(), checked.unwrap_err().to_string());
        assert_eq!(store.model_names(), ["m"], "after {model:?} {version:?}");
        assert_eq!(store.default_model().as_deref(), Some("m"));
    }
    // Names that can never be a directory are invalid, not unknown.
    assert!(matches!(
        store.reload("a/b", None).await,
        Err(profiled_store::Error::InvalidName(_))
    ));
    assert!(matches!(
        store.snapshot("../m"),
        Err(profiled_store::Error::InvalidName(_))
    ));
    assert!(matches!(
        store.reload("m", Some(0)).await,
        Err(profiled_store::Error::InvalidVersion(0))
    ));
    assert!(matches!(
        store.reload("m-typo", None).await,
        Err(profiled_store::Error::UnknownModel { .. })
    ));
    // A scan after the refused calls still knows only `m`, and it serves.
    store.scan().await.unwrap();
    assert_eq!(store.model_names(), ["m"]);
    assert_eq!(store.resolve("", &Selector::Default).unwrap().version, 1);
    // A real reload of the real model still works.
    store.reload("m", Some(1)).await.unwrap();
    store.reload("m", None).await.unwrap();
    store.reload("", None).await.unwrap();
}

/// F8 of the outside client's findings: a version copied in file by file
/// (`mkdir`, `model.json`, the rest later — what `cp -r`, `rsync` or
/// `kubectl cp` do) fails while incomplete and loads once its files are all
/// there and have settled, with no Reload; an unchanged failed version is
/// not tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_version_is_retried_when_its_files_change() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    make_version(&repo.join("m/1"), 1);
    let src = tmp.path().join("src");
    make_version(&src, 2);
    let mut cfg = StoreConfig::new(&repo);
    cfg.debounce = std::time::Duration::from_millis(50);
    let store = Store::new(cfg);
    let state_of = |v: u64| {
        let snap = store.snapshot("m").unwrap();
        let s = snap.versions.iter().find(|x| x.version == v).unwrap();
        (s.status.state, s.status.failures)
    };
    let dir2 = repo.join("m/2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::copy(src.join("model.json"), dir2.join("model.json")).unwrap();
    store.scan().await.unwrap();
    assert_eq!(state_of(2), (VersionState::Failed, 1));
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().version, 1);
    // Nothing changed: not tried again.
    std::thread::sleep(std::time::Duration::from_millis(100));
    store.scan().await.unwrap();
    assert_eq!(state_of(2), (VersionState::Failed, 1));
    // The rest of the files arrive; once they have settled, a scan (the
    // watcher's poll or event) loads the version.
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "model.json" {
            std::fs::copy(e.path(), dir2.join(e.file_name())).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    store.scan().await.unwrap();
    assert_eq!(state_of(2).0, VersionState::Ready);
    assert_eq!(store.resolve("m", &Selector::Default).unwrap().version, 2);
}
