//! Tests of the RecBole atomic-file loader on small files written here.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use profiled_train::atomic::{AtomicFiles, ColumnMap, load_atomic, load_atomic_dir};
use profiled_train::data::FieldValue;
use profiled_train::{Error, resolve_dataset};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn ml_like(dir: &Path, crlf: bool) {
    let fix = |s: &str| {
        if crlf {
            s.replace('\n', "\r\n")
        } else {
            s.to_string()
        }
    };
    write(
        dir,
        "toy.inter",
        &fix(
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
              u 1\tit/α\t4\t100\n\
              u2\tit/α\t3\t99.7\n\
              u 1\tb\t5\t100\n\
              ghost\tb\t1\t5\n",
        ),
    );
    write(
        dir,
        "toy.user",
        &fix(
            "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n\
              u 1\t24\tM\ttechnician\t85711\n\
              u2\t53\tF\t\t94043\n",
        ),
    );
    write(
        dir,
        "toy.item",
        &fix(
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
              it/α\tToy  Story\t1995\tAnimation Children's Comedy\n\
              b\tGoldenEye\t1995\tAction\n\
              unused\t\t\t\n",
        ),
    );
}

#[test]
fn loads_movielens_layout_with_crlf_and_odd_ids() {
    for crlf in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("toy");
        std::fs::create_dir(&dir).unwrap();
        ml_like(&dir, crlf);
        let (ds, report) = load_atomic_dir(&dir).unwrap();
        assert_eq!(ds.name, "toy");
        let ids: Vec<_> = ds.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["u 1", "u2", "ghost"]);
        assert_eq!(report.bare_users, 1);
        assert_eq!(report.bare_items, 0);
        assert_eq!(ds.items.len(), 3);
        assert_eq!(ds.items[0].id, "it/α");
        assert_eq!(ds.items[0].title.as_deref(), Some("Toy Story"));
        assert_eq!(ds.items[0].genres, ["Animation", "Children's", "Comedy"]);
        assert_eq!(ds.items[2].title, None);
        assert!(ds.items[2].genres.is_empty());
        assert_eq!(
            ds.items[1].fields.get("release_year"),
            Some(&FieldValue::Token("1995".into()))
        );
        assert_eq!(
            ds.users[0].fields.get("gender"),
            Some(&FieldValue::Token("M".into()))
        );
        assert!(!ds.users[1].fields.contains_key("occupation"));
        assert!(ds.users[2].fields.is_empty());
        assert_eq!(ds.interactions.len(), 4);
        assert_eq!(ds.interactions[1].timestamp, 99);
        assert_eq!(ds.interactions[1].user, 1);
        assert_eq!(ds.interactions[3].rating, Some(1.0));
    }
}

#[test]
fn resolve_by_path_and_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toy");
    std::fs::create_dir(&dir).unwrap();
    ml_like(&dir, false);
    let a = resolve_dataset(dir.to_str().unwrap(), Path::new("/nonexistent")).unwrap();
    let b = resolve_dataset("toy", tmp.path()).unwrap();
    assert_eq!(a, b);
    let err = resolve_dataset("ml-100k", tmp.path()).unwrap_err();
    assert!(matches!(err, Error::UnknownDataset { .. }));
    assert!(
        err.to_string().contains("profilectl data fetch ml-100k"),
        "{err}"
    );
}

#[test]
fn malformed_rows_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toy");
    std::fs::create_dir(&dir).unwrap();
    ml_like(&dir, true);
    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n\
         u 1\tb\t4\t100\r\n\
         \r\n\
         u 1\tb\t4\r\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    match &err {
        Error::Malformed { file, line, .. } => {
            assert!(file.ends_with("toy.inter"));
            assert_eq!(*line, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("toy.inter:4:"), "{err}");

    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu\tb\tfour\t1\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 2, .. }), "{err}");

    write(&dir, "toy.inter", "user_id\titem_id:token\n");
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 1, .. }), "{err}");

    write(&dir, "toy.inter", "user_id:token\titem_id:tokn\n");
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("unknown type `tokn`"), "{err}");

    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu\tb\t3\t\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 2, .. }), "{err}");

    std::fs::write(
        dir.join("toy.inter"),
        b"user_id:token\titem_id:token\nu\t\xff\n",
    )
    .unwrap();
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 2, .. }), "{err}");
}

#[test]
fn unknown_columns_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toy");
    std::fs::create_dir(&dir).unwrap();
    ml_like(&dir, false);
    write(
        &dir,
        "columns.json",
        r#"{"user_fields": ["age", "shoe_size"]}"#,
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    match &err {
        Error::UnknownColumn { column, file, .. } => {
            assert_eq!(column, "shoe_size");
            assert!(file.ends_with("toy.user"));
        }
        other => panic!("unexpected {other:?}"),
    }
    write(&dir, "columns.json", r#"{"user_fieldz": []}"#);
    assert!(matches!(
        load_atomic_dir(&dir).unwrap_err(),
        Error::Config(_)
    ));

    // A dataset without rating and timestamp columns works once mapped.
    write(&dir, "toy.inter", "uid:token\tiid:token\na\tb\na\tc\n");
    std::fs::remove_file(dir.join("toy.user")).unwrap();
    std::fs::remove_file(dir.join("toy.item")).unwrap();
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    write(
        &dir,
        "columns.json",
        r#"{"user_id": "uid", "item_id": "iid", "rating": null, "timestamp": null}"#,
    );
    let (ds, _) = load_atomic_dir(&dir).unwrap();
    assert_eq!(ds.items.len(), 2);
    assert_eq!(ds.interactions[1].timestamp, 1);
    assert_eq!(ds.interactions[1].rating, None);
    std::fs::remove_file(dir.join("columns.json")).unwrap();
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::UnknownColumn { ref column, .. } if column == "user_id"),
        "{err}"
    );
}

#[test]
fn empty_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toy");
    std::fs::create_dir(&dir).unwrap();
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::EmptyDataset(_)), "{err}");
    write(&dir, "toy.inter", "");
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    let files = AtomicFiles {
        inter: dir.join("nope.inter"),
        user: None,
        item: None,
    };
    let err = load_atomic("x", &files, &ColumnMap::movielens()).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
}

#[test]
fn ratings_out_of_range_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toy");
    std::fs::create_dir(&dir).unwrap();
    ml_like(&dir, false);
    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu 1\tb\t4\t1\nu 1\tb\t7\t2\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::RatingOutOfRange { line: 3, .. }),
        "{err}"
    );
    write(
        &dir,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu 1\tb\tNaN\t1\n",
    );
    assert!(matches!(
        load_atomic_dir(&dir).unwrap_err(),
        Error::Malformed { line: 2, .. }
    ));
    ml_like(&dir, false);
    write(
        &dir,
        "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
         b\tX\t1\tA\nc\tY\t1\tA\nb\tZ\t2\tB\n",
    );
    let err = load_atomic_dir(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DuplicateId {
                kind: "item",
                line: 4,
                first_line: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn synthetic_names_resolve() {
    let nowhere = Path::new("/nonexistent");
    let a = resolve_dataset("synthetic-small:3", nowhere).unwrap();
    let b = resolve_dataset("synthetic-small:3", nowhere).unwrap();
    assert_eq!(a, b);
    assert!(!a.interactions.is_empty());
    assert_ne!(a, resolve_dataset("synthetic-small:4", nowhere).unwrap());
    assert!(matches!(
        resolve_dataset("synthetic:x", nowhere).unwrap_err(),
        Error::UnknownDataset { .. }
    ));
    assert!(matches!(
        resolve_dataset("synthetically", nowhere).unwrap_err(),
        Error::UnknownDataset { .. }
    ));
}

#[test]
fn recbole_ml1m_column_names_load_without_a_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ml-1m");
    std::fs::create_dir(&dir).unwrap();
    // RecBole's ml-1m layout: genres in `genre`, no `class`.
    write(
        &dir,
        "ml-1m.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
         1\t10\t5\t978300760\n\
         1\t20\t3\t978302109\n",
    );
    write(
        &dir,
        "ml-1m.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n\
         1\t1\tF\t10\t48067\n",
    );
    write(
        &dir,
        "ml-1m.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n\
         10\tToy Story\t1995\tAnimation Children's Comedy\n\
         20\tJumanji\t1995\tAdventure\n",
    );
    let (ds, _) = load_atomic_dir(&dir).unwrap();
    assert_eq!(ds.items[0].genres, ["Animation", "Children's", "Comedy"]);
    assert_eq!(ds.items[1].genres, ["Adventure"]);
    assert_eq!(ds.interactions.len(), 2);

    // A mapping that names a column the file lacks: the error names the key.
    write(&dir, "columns.json", r#"{"genres": "class_label"}"#);
    let err = load_atomic_dir(&dir).unwrap_err();
    match &err {
        Error::UnknownColumn { column, key, .. } => {
            assert_eq!(column, "class_label");
            assert_eq!(key, "genres");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`genres` key of columns.json"), "{msg}");
    assert!(msg.contains("genre"), "{msg}");
}
