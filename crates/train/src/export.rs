//! Model files: `models/<name>/<version>/{model.safetensors, model.json}`.
//!
//! A version is written into a temporary folder in the same parent and then
//! renamed to the next free positive integer, so readers never see a
//! half-written version and an existing version is never overwritten.
//! The layout and every key are specified in `docs/model-format.md`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use profiled_model::tokenizer::numeric_value;

use crate::error::{Error, Result};
use crate::model::ProfileModel;
use crate::schema::{
    EventInput, FeatureSchema, FeatureValue, NumericTransform, ProfileInput, dataset_inputs,
};

pub use profiled_model::format::{
    FORMAT, FORMAT_VERSION, Golden, METADATA_FILE, ModelJson, WEIGHTS_FILE,
};

/// True when the model was trained on every event (`split.all_events`, true
/// when absent: eval must refuse such a model).
pub fn saw_all_events(meta: &ModelJson) -> bool {
    meta.split
        .get("all_events")
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// Computes the expected profile of each input with `model` (one user per
/// forward pass, so no padding is involved).
pub fn golden_examples(
    model: &ProfileModel,
    inputs: Vec<(String, ProfileInput)>,
) -> Result<Vec<Golden>> {
    let tk = model.tokenizer();
    let mut out = Vec::with_capacity(inputs.len());
    for (note, input) in inputs {
        let tokens = tk.tokenize(&input.to_features())?;
        let v = model.profiles(&[&tokens])?.to_vec2::<f32>()?;
        let profile = v.into_iter().next().unwrap_or_default();
        out.push(Golden {
            note,
            input,
            profile,
        });
    }
    Ok(out)
}

/// Builds a varied set of ≥ 16 golden inputs from real users: no events,
/// one event, short and long histories (> `max_events`), unsorted events, an
/// unknown item, missing ratings, missing fields, an unknown categorical value
/// and a number given as text.
pub fn golden_inputs(
    schema: &FeatureSchema,
    users: &[(ProfileInput, Vec<EventInput>)],
) -> Vec<(String, ProfileInput)> {
    let mut out = Vec::new();
    if users.is_empty() {
        return out;
    }
    let max = schema.behaviour.max_events;
    // Users sorted by history length, to pick short and long ones.
    let mut order: Vec<usize> = (0..users.len())
        .filter(|&i| !users[i].1.is_empty())
        .collect();
    if order.is_empty() {
        order = (0..users.len()).collect();
    }
    order.sort_by_key(|&i| (users[i].1.len(), i));
    let longest = order[order.len() - 1];
    let pick = |k: usize| order[(k * (order.len() - 1)) / 9];
    let with = |i: usize, n: usize| {
        let (base, ev) = &users[i];
        let mut p = base.clone();
        let start = ev.len().saturating_sub(n);
        p.events = ev[start..].to_vec();
        p
    };
    out.push(("no events".to_string(), with(order[0], 0)));
    out.push(("one event".to_string(), with(order[0], 1)));
    for k in 0..10 {
        let i = pick(k);
        let n = users[i].1.len();
        out.push((format!("history of {n} events"), with(i, n)));
    }
    let n = users[longest].1.len();
    let mut p = with(longest, n);
    p.events.reverse();
    out.push((format!("{n} events, newest first (unsorted)"), p));
    let mut p = with(longest, max + 1);
    p.events.swap(0, max);
    out.push((
        format!("{} events (one more than kept), two swapped", max + 1),
        p,
    ));
    let i = pick(5);
    let mut p = with(i, 8);
    p.events.push(EventInput {
        item: "__unknown_item__".into(),
        timestamp: p.events.last().map_or(0, |e| e.timestamp) + 60,
        rating: None,
    });
    for e in p.events.iter_mut().step_by(2) {
        e.rating = None;
    }
    out.push(("unknown item and missing ratings".to_string(), p));
    let mut p = with(pick(3), 5);
    p.fields.clear();
    out.push(("no fields at all".to_string(), p));
    let mut p = with(pick(4), 12);
    for (k, v) in p.fields.iter_mut() {
        if k != "age" {
            *v = FeatureValue::Text("__unseen__".into());
        }
    }
    out.push(("unseen categorical values".to_string(), p));
    let mut p = with(pick(6), 3);
    if let Some(v) = p.fields.get_mut("age") {
        let x = numeric_value("age", NumericTransform::Identity, &v.to_field_value());
        *v = FeatureValue::Number(x.ok().flatten().unwrap_or(30.0));
    }
    out.push(("age given as a number, three events".to_string(), p));
    let mut p = with(pick(7), 20);
    let t0 = p.events.first().map_or(0, |e| e.timestamp);
    for e in p.events.iter_mut() {
        e.timestamp = t0;
    }
    out.push(("20 events with equal timestamps".to_string(), p));
    out
}

/// Next free version number under `root` (1 + the largest numeric entry).
pub fn next_version(root: &Path) -> Result<u32> {
    let mut max = 0u32;
    match fs::read_dir(root) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| Error::io(root, e))?;
                if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    max = max.max(v);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(root, e)),
    }
    max.checked_add(1)
        .ok_or_else(|| Error::Config(format!("{}: no free version number", root.display())))
}

/// Writes `model` and `meta` as a new version under `root`
/// (`models/<name>`): temp folder + rename, never overwriting. Returns the
/// version and its folder.
pub fn write_version(
    root: &Path,
    model: &ProfileModel,
    mut meta: ModelJson,
    f16: bool,
) -> Result<(u32, PathBuf)> {
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-version-")
        .tempdir_in(root)
        .map_err(|e| Error::io(root, e))?;
    let dtype = if f16 { DType::F16 } else { DType::F32 };
    let tensors: HashMap<String, candle_core::Tensor> = model
        .tensors()
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(dtype)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let wpath = tmp.path().join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &wpath)?;
    meta.dtype = if f16 { "f16" } else { "f32" }.to_string();
    for attempt in 0..100 {
        let version = next_version(root)?;
        meta.version = version;
        let jpath = tmp.path().join(METADATA_FILE);
        let text = serde_json::to_string_pretty(&meta)?;
        fs::write(&jpath, text + "\n").map_err(|e| Error::io(&jpath, e))?;
        for f in [&wpath, &jpath] {
            make_readable(f, false)?;
            fs::File::open(f)
                .and_then(|h| h.sync_all())
                .map_err(|e| Error::io(f, e))?;
        }
        make_readable(tmp.path(), true)?;
        let dest = root.join(version.to_string());
        if dest.exists() {
            continue;
        }
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                let _ = tmp.keep();
                if let Ok(d) = fs::File::open(root) {
                    let _ = d.sync_all();
                }
                return Ok((version, dest));
            }
            // Someone else took this number (non-empty destination): try the next.
            Err(_) if dest.exists() && attempt < 99 => continue,
            Err(e) => return Err(Error::io(&dest, e)),
        }
    }
    Err(Error::Config(format!(
        "{}: could not claim a version number",
        root.display()
    )))
}

/// Published files are world-readable (0644, folders 0755) whatever the
/// temporary file's mode was, so a server under another user can map them.
fn make_readable(path: &Path, dir: bool) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if dir { 0o755 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, dir);
    Ok(())
}

/// Reads `model.json` of a version folder.
pub fn read_metadata(dir: &Path) -> Result<ModelJson> {
    let path = dir.join(METADATA_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let meta: ModelJson = serde_json::from_str(&text).map_err(|e| Error::Model {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if meta.format != FORMAT || meta.format_version != FORMAT_VERSION {
        return Err(Error::Model {
            path,
            message: format!(
                "format {} v{} is not {FORMAT} v{FORMAT_VERSION}",
                meta.format, meta.format_version
            ),
        });
    }
    Ok(meta)
}

/// Loads a version folder into a trainer model (f32 or f16 weights).
pub fn load_version(dir: &Path) -> Result<(ProfileModel, ModelJson)> {
    let meta = read_metadata(dir)?;
    let wpath = dir.join(WEIGHTS_FILE);
    if !wpath.exists() {
        return Err(Error::MissingFile {
            path: wpath,
            hint: String::new(),
        });
    }
    let tensors =
        candle_core::safetensors::load(&wpath, &Device::Cpu).map_err(|e| Error::Model {
            path: wpath.clone(),
            message: e.to_string(),
        })?;
    let model = ProfileModel::from_tensors(
        meta.schema.clone(),
        meta.architecture.clone(),
        tensors,
        &wpath,
    )?;
    Ok((model, meta))
}

/// Resolves a model path: a version folder (has model.json) or a model
/// folder (its highest version).
pub fn resolve_version_dir(path: &Path) -> Result<PathBuf> {
    if path.join(METADATA_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    let last = next_version(path)?.saturating_sub(1);
    if last == 0 {
        return Err(Error::MissingFile {
            path: path.join(METADATA_FILE),
            hint: "not a model version folder, and no numbered versions inside".into(),
        });
    }
    Ok(path.join(last.to_string()))
}

/// Inputs for [`model_json`] besides the trained model.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// Model name (`models/<name>`).
    pub name: String,
    /// Dataset provenance.
    pub dataset: serde_json::Value,
    /// Training provenance.
    pub training: serde_json::Value,
    /// The split description (must contain `all_events`).
    pub split: serde_json::Value,
    /// Metrics.
    pub metrics: serde_json::Value,
}

/// Assembles `model.json` for a trained model, computing the golden examples
/// from the dataset's users (their whole time-sorted histories).
pub fn model_json(
    model: &ProfileModel,
    dataset: &crate::data::Dataset,
    info: ExportInfo,
) -> Result<ModelJson> {
    let users: Vec<(ProfileInput, Vec<EventInput>)> = dataset_inputs(&model.schema, dataset)
        .into_iter()
        .map(|mut p| {
            let events = std::mem::take(&mut p.events);
            (p, events)
        })
        .collect();
    let mut inputs = golden_inputs(&model.schema, &users);
    if model.schema.fields.is_empty() {
        // Behaviour-only models need at least one event per example.
        inputs.retain(|(_, p)| !p.events.is_empty());
    }
    let golden = golden_examples(model, inputs)?;
    Ok(ModelJson {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: info.name,
        version: 0,
        dtype: "f32".into(),
        architecture: model.config.clone(),
        schema: model.schema.clone(),
        dataset: info.dataset,
        training: info.training,
        split: info.split,
        metrics: info.metrics,
        golden,
    })
}
