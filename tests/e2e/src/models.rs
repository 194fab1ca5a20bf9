//! Synthetic model versions and the temporary model repositories the server
//! under test serves (`<tmp>/models/<name>/<version>/`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, LoadOptions, Workspace};
use tempfile::TempDir;

/// The admin bearer token [`write_admin_token`] writes.
pub const ADMIN_TOKEN: &str = "s3cret";

/// Writes a valid synthetic model version (random weights, golden profiles
/// from the f64 reference) and its indexes ([`write_indexes`]) into `dir`.
pub fn make_model(dir: &Path, seed: u64) -> Result<()> {
    let spec = SyntheticSpec {
        seed,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(dir, &spec)?;
    write_indexes(dir, seed)?;
    Ok(())
}

/// Loads the model version in `dir` without its golden check (to compute
/// what it should answer, or to build indexes from it).
pub fn load_unverified(dir: &Path) -> Result<Encoder> {
    Ok(Encoder::load_with(
        dir,
        &LoadOptions {
            verify_golden: false,
            ..LoadOptions::default()
        },
    )?)
}

/// Builds `items.index` (item vectors, attribute `parity` = even/odd) and
/// `users.index` (users `u0`..`u19` with random features, attribute
/// `segment` = a/b, and `seen_items` = the item ids of their events) for the
/// model version in `dir`.
pub fn write_indexes(dir: &Path, seed: u64) -> Result<()> {
    let enc = load_unverified(dir)?;
    let dim = enc.dim();
    let mut items = profiled_index::IndexBuilder::new(dim)?;
    for (k, id) in enc.item_ids().iter().enumerate() {
        let v = &enc.item_vectors()[k * dim..(k + 1) * dim];
        let row = items.push(id, v)?;
        items.add_attribute(row, "parity", if k % 2 == 0 { "even" } else { "odd" })?;
    }
    items.write(dir.join("items.index"))?;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let users: Vec<_> = (0..20)
        .map(|_| random_user(&mut rng, enc.item_ids().len(), 8))
        .collect();
    let mut ws = Workspace::new();
    let p = enc.forward_batch(&users, &mut ws)?;
    let mut ub = profiled_index::IndexBuilder::new(dim)?;
    for i in 0..users.len() {
        let row = ub.push(&format!("u{i}"), p.row(i).context("row")?)?;
        ub.add_attribute(row, "segment", if i % 2 == 0 { "a" } else { "b" })?;
        for e in &users[i].events {
            ub.add_attribute(row, profiled_store::SEEN_ITEMS_ATTRIBUTE, &e.item)?;
        }
    }
    ub.write(dir.join("users.index"))?;
    Ok(())
}

/// Negates the expected golden profiles in `dir/model.json`, so that the
/// version's golden check fails and the server must refuse it.
pub fn negate_golden(dir: &Path) -> Result<()> {
    let p = dir.join("model.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    let golden = j["golden"].as_array_mut().context("golden")?;
    for g in golden {
        for x in g["profile"].as_array_mut().context("profile")? {
            *x = serde_json::json!(-x.as_f64().context("number")?);
        }
    }
    std::fs::write(&p, serde_json::to_string(&j)?)?;
    Ok(())
}

/// Writes a model version whose golden check fails ([`make_model`], then
/// [`negate_golden`]).
pub fn make_broken_model(dir: &Path, seed: u64) -> Result<()> {
    make_model(dir, seed)?;
    negate_golden(dir)
}

/// Publishes a fresh synthetic version of `name` into `repo` (`broken`: one
/// whose golden check fails); returns the version number.
pub fn publish_model(repo: &Path, name: &str, seed: u64, broken: bool) -> Result<u64> {
    let src = tempfile::tempdir()?;
    let dir = src.path().join("v");
    if broken {
        make_broken_model(&dir, seed)?;
    } else {
        make_model(&dir, seed)?;
    }
    Ok(profiled_store::publish(&dir, repo, name)?.0)
}

/// A temporary directory and an empty model repository `<tmp>/models` in
/// it. The directory (and everything a test puts in it) is removed when the
/// [`TempDir`] is dropped.
pub fn temp_repo() -> Result<(TempDir, PathBuf)> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("models");
    std::fs::create_dir_all(&repo)?;
    Ok((tmp, repo))
}

/// [`temp_repo`] holding version 1 of the synthetic model `synth`, made
/// from `seed`.
pub fn synth_repo(seed: u64) -> Result<(TempDir, PathBuf)> {
    let (tmp, repo) = temp_repo()?;
    publish_model(&repo, "synth", seed, false)?;
    Ok((tmp, repo))
}

/// Writes [`ADMIN_TOKEN`] to `dir/token` (the form
/// `PROFILED__ADMIN__TOKEN_FILE` reads); returns the file's path.
pub fn write_admin_token(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n"))?;
    Ok(path)
}
