//! [`Store`]: the registry of models, versions and generations, with loading
//! off the request path, atomic swaps, labels and the repository watcher.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use profiled_index::{BackendFactory, LocalFactory};

use crate::error::{Error, Result};
use crate::generation::Generation;
use crate::policy::VersionPolicy;
use crate::repo;

/// Configuration of a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The repository root (`<root>/<name>/<version>/`).
    pub root: PathBuf,
    /// Version policy of models without an entry in `policies`.
    pub default_policy: VersionPolicy,
    /// Version policy per model name.
    pub policies: BTreeMap<String, VersionPolicy>,
    /// The model requests with an empty name get (otherwise the only model,
    /// when exactly one exists).
    pub default_model: Option<String>,
    /// Period of the repository poll (the watcher's safety net).
    pub poll_interval: Duration,
    /// Debounce of file-system events.
    pub debounce: Duration,
    /// Run the golden examples at load (always true in production).
    pub verify_golden: bool,
    /// Nice increment of the thread that loads a version (0 = same priority
    /// as the requests), so a load under traffic takes the CPU the requests
    /// leave instead of competing with them.
    pub load_nice: i32,
    /// Opens each version's indexes (config `index.backend`; the local mmap
    /// backend by default).
    pub indexes: Arc<dyn BackendFactory>,
}

impl StoreConfig {
    /// A configuration with defaults for `root`: policy `latest`, poll every
    /// 5 s, debounce 300 ms, golden check on.
    pub fn new(root: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            root: root.into(),
            default_policy: VersionPolicy::Latest,
            policies: BTreeMap::new(),
            default_model: None,
            poll_interval: Duration::from_secs(5),
            debounce: Duration::from_millis(300),
            verify_golden: true,
            load_nice: 10,
            indexes: Arc::new(LocalFactory::default()),
        }
    }
}

/// Lifecycle state of a version in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Being loaded, validated and warmed.
    Loading,
    /// Serving.
    Ready,
    /// Refused (see the reason); never serves.
    Failed,
    /// No longer selectable; requests that started on it are still
    /// running, and its memory is released when the last one finishes.
    /// Reported by snapshots only (the stored state is `Unloaded`).
    Unloading,
    /// Not loaded (dropped by the policy, or by an operator).
    Unloaded,
}

impl VersionState {
    /// Upper-case name, as in the API.
    pub fn name(self) -> &'static str {
        match self {
            VersionState::Loading => "LOADING",
            VersionState::Ready => "READY",
            VersionState::Failed => "FAILED",
            VersionState::Unloading => "UNLOADING",
            VersionState::Unloaded => "UNLOADED",
        }
    }
}

/// What the store knows about one version.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// Current state.
    pub state: VersionState,
    /// Why it failed or was unloaded; empty otherwise.
    pub reason: String,
    /// When it entered the state.
    pub since: SystemTime,
    /// Duration of the last successful load.
    pub load_duration: Option<Duration>,
    /// Generation id while READY; 0 otherwise.
    pub generation_id: u64,
    /// Failed load attempts so far.
    pub failures: u32,
    /// Unloaded by an operator: the watcher does not load it again until a
    /// reload names it.
    pub pinned_out: bool,
    /// The generation that served the version before it was unloaded; alive
    /// while in-flight requests still hold it (state UNLOADING).
    draining: Option<Weak<Generation>>,
    /// Hash of the version directory ([`repo::DirStamp`]) when its last
    /// load started, kept while FAILED: the watcher retries the version
    /// when its files change.
    failed_stamp: Option<u64>,
}

impl VersionStatus {
    fn new(state: VersionState, reason: impl Into<String>) -> VersionStatus {
        VersionStatus {
            state,
            reason: reason.into(),
            since: SystemTime::now(),
            load_duration: None,
            generation_id: 0,
            failures: 0,
            pinned_out: false,
            draining: None,
            failed_stamp: None,
        }
    }

    fn set(&mut self, state: VersionState, reason: impl Into<String>) {
        self.state = state;
        self.reason = reason.into();
        self.since = SystemTime::now();
        self.draining = None;
        if state != VersionState::Ready {
            self.generation_id = 0;
        }
    }

    /// Marks the version UNLOADED; `old` (the generation it served with)
    /// makes it show as UNLOADING until the last request holding it ends.
    fn set_unloaded(&mut self, reason: impl Into<String>, old: Option<&Arc<Generation>>) {
        self.set(VersionState::Unloaded, reason);
        self.draining = old.map(Arc::downgrade);
    }

    /// The generation still draining after an unload, if any request holds it.
    pub fn draining_generation(&self) -> Option<Arc<Generation>> {
        self.draining.as_ref().and_then(Weak::upgrade)
    }
}

/// How a request selects a version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selector {
    /// The model's default version (newest READY one the policy allows).
    #[default]
    Default,
    /// Exactly this version (it must be READY).
    Version(u64),
    /// The version a label points to (it must be READY).
    Label(String),
}

/// A model and its versions, for status RPCs.
#[derive(Debug, Clone)]
pub struct ModelSnapshot {
    /// Model name.
    pub name: String,
    /// Its version policy.
    pub policy: VersionPolicy,
    /// The default version; 0 when none is READY.
    pub default_version: u64,
    /// Label → version.
    pub labels: BTreeMap<String, u64>,
    /// Every known version, newest first.
    pub versions: Vec<VersionSnapshot>,
}

/// One version of a [`ModelSnapshot`].
#[derive(Debug, Clone)]
pub struct VersionSnapshot {
    /// Version number.
    pub version: u64,
    /// Its status.
    pub status: VersionStatus,
    /// The generation while READY.
    pub generation: Option<Arc<Generation>>,
    /// Whether it is the default version.
    pub is_default: bool,
    /// Labels pointing to it.
    pub labels: Vec<String>,
}

#[derive(Debug)]
struct ModelState {
    name: String,
    policy: VersionPolicy,
    default: ArcSwapOption<Generation>,
    versions: Mutex<BTreeMap<u64, VersionStatus>>,
    labels: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Inner {
    cfg: StoreConfig,
    models: DashMap<String, Arc<ModelState>>,
    slots: DashMap<(String, u64), Arc<ArcSwap<Generation>>>,
    scan_lock: tokio::sync::Mutex<()>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// The model store. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// A store over `cfg.root` with nothing loaded yet; call [`Store::scan`]
    /// (or [`Store::spawn_watcher`]) to load.
    pub fn new(cfg: StoreConfig) -> Store {
        let (changed, _) = tokio::sync::watch::channel(0);
        Store {
            inner: Arc::new(Inner {
                cfg,
                models: DashMap::new(),
                slots: DashMap::new(),
                scan_lock: tokio::sync::Mutex::new(()),
                changed,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// A receiver that changes whenever a version changes state (for health).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Names of the known models, sorted.
    pub fn model_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.models.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// The model requests with an empty name get: the configured default
    /// model, or the only model when exactly one is known.
    pub fn default_model(&self) -> Option<String> {
        if let Some(d) = &self.inner.cfg.default_model {
            return Some(d.clone());
        }
        let names = self.model_names();
        if names.len() == 1 {
            names.into_iter().next()
        } else {
            None
        }
    }

    /// True when at least one model has a READY default version.
    pub fn any_ready(&self) -> bool {
        self.inner
            .models
            .iter()
            .any(|m| m.value().default.load().is_some())
    }

    /// True when every known model has a READY default version (and there is
    /// at least one model).
    pub fn all_ready(&self) -> bool {
        !self.inner.models.is_empty()
            && self
                .inner
                .models
                .iter()
                .all(|m| m.value().default.load().is_some())
    }

    fn model(&self, name: &str) -> Result<(String, Arc<ModelState>)> {
        let name = if name.is_empty() {
            self.default_model().ok_or_else(|| Error::NoDefaultModel {
                available: self.available(),
            })?
        } else {
            name.to_string()
        };
        match self.inner.models.get(&name) {
            Some(m) => Ok((name, m.value().clone())),
            None => {
                // A name that could never be a model directory is the caller's
                // mistake, not a missing model (checked only on a miss).
                repo::validate_model_name(&name)?;
                Err(Error::UnknownModel {
                    name,
                    available: self.available(),
                })
            }
        }
    }

    fn available(&self) -> String {
        let names = self.model_names();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// The generation a request gets. Take it once per request and keep the
    /// `Arc` until the response is built: the whole request then runs on one
    /// generation even if a swap happens meanwhile.
    pub fn resolve(&self, name: &str, selector: &Selector) -> Result<Arc<Generation>> {
        let (name, m) = self.model(name)?;
        match selector {
            Selector::Default => m
                .default
                .load_full()
                .ok_or(Error::NoReadyVersion { model: name }),
            Selector::Version(v) => self.pinned(&name, &m, *v),
            Selector::Label(label) => {
                let v = lock(&m.labels).get(label).copied();
                match v {
                    Some(v) => self.pinned(&name, &m, v),
                    None => Err(Error::UnknownLabel {
                        model: name,
                        label: crate::error::shown(label),
                    }),
                }
            }
        }
    }

    fn pinned(&self, name: &str, m: &ModelState, v: u64) -> Result<Arc<Generation>> {
        if let Some(slot) = self.inner.slots.get(&(name.to_string(), v)) {
            return Ok(slot.value().load_full());
        }
        let state = match lock(&m.versions).get(&v) {
            None => "unknown version".to_string(),
            Some(s) if s.reason.is_empty() => s.state.name().to_string(),
            Some(s) => format!("{}: {}", s.state.name(), s.reason),
        };
        Err(Error::VersionNotReady {
            model: name.to_string(),
            version: v,
            state,
        })
    }

    /// A status snapshot of one model (empty name = the default model).
    pub fn snapshot(&self, name: &str) -> Result<ModelSnapshot> {
        let (name, m) = self.model(name)?;
        let default = m.default.load_full();
        let labels = lock(&m.labels).clone();
        let versions = lock(&m.versions).clone();
        let mut out = Vec::with_capacity(versions.len());
        for (v, mut status) in versions.into_iter().rev() {
            let mut generation = self
                .inner
                .slots
                .get(&(name.clone(), v))
                .map(|s| s.value().load_full());
            if status.state == VersionState::Unloaded
                && let Some(g) = status.draining_generation()
            {
                status.state = VersionState::Unloading;
                status.generation_id = g.id;
                generation = Some(g);
            }
            out.push(VersionSnapshot {
                version: v,
                is_default: default.as_ref().is_some_and(|d| d.version == v),
                labels: labels
                    .iter()
                    .filter(|(_, lv)| **lv == v)
                    .map(|(l, _)| l.clone())
                    .collect(),
                status,
                generation,
            });
        }
        Ok(ModelSnapshot {
            name,
            policy: m.policy,
            default_version: default.map_or(0, |d| d.version),
            labels,
            versions: out,
        })
    }

    /// Snapshots of every model, by name.
    pub fn snapshots(&self) -> Vec<ModelSnapshot> {
        self.model_names()
            .iter()
            .filter_map(|n| self.snapshot(n).ok())
            .collect()
    }

    fn ensure_model(&self, name: &str) -> Arc<ModelState> {
        self.inner
            .models
            .entry(name.to_string())
            .or_insert_with(|| {
                let policy = self
                    .inner
                    .cfg
                    .policies
                    .get(name)
                    .copied()
                    .unwrap_or(self.inner.cfg.default_policy);
                Arc::new(ModelState {
                    name: name.to_string(),
                    policy,
                    default: ArcSwapOption::empty(),
                    versions: Mutex::new(BTreeMap::new()),
                    labels: Mutex::new(BTreeMap::new()),
                })
            })
            .clone()
    }

    /// Registers the models found in the repository without loading
    /// anything (fast; call it before serving so that requests for a model
    /// still loading answer UNAVAILABLE rather than NOT_FOUND).
    pub fn discover(&self) -> Result<()> {
        for name in repo::list_models(&self.inner.cfg.root)? {
            self.ensure_model(&name);
        }
        Ok(())
    }

    /// Rescans the whole repository: discovers models and versions, loads
    /// what the version policies want (off the request path), swaps defaults
    /// atomically and unloads versions the policies no longer keep.
    pub async fn scan(&self) -> Result<()> {
        let _guard = self.inner.scan_lock.lock().await;
        let root = self.inner.cfg.root.clone();
        let names = tokio::task::spawn_blocking(move || repo::list_models(&root))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        for name in names {
            if let Err(e) = self.scan_model_locked(&name).await {
                tracing::warn!(model = %name, error = %e, "scan failed");
            }
        }
        Ok(())
    }

    /// Rescans one model.
    pub async fn scan_model(&self, name: &str) -> Result<()> {
        repo::validate_model_name(name)?;
        let _guard = self.inner.scan_lock.lock().await;
        self.scan_model_locked(name).await
    }

    async fn scan_model_locked(&self, name: &str) -> Result<()> {
        let dir = self.inner.cfg.root.join(name);
        let d2 = dir.clone();
        // FAILED versions: their directories are stamped again, to retry
        // the ones whose files changed since (a copy that was not finished).
        let failed: Vec<(u64, u64)> = self
            .inner
            .models
            .get(name)
            .map(|m| {
                lock(&m.versions)
                    .iter()
                    .filter(|(_, s)| s.state == VersionState::Failed && !s.pinned_out)
                    .filter_map(|(v, s)| s.failed_stamp.map(|h| (*v, h)))
                    .collect()
            })
            .unwrap_or_default();
        let (disk, labels, stamps) = tokio::task::spawn_blocking(move || {
            let stamps: Vec<(u64, u64, repo::DirStamp)> = failed
                .into_iter()
                .map(|(v, h)| (v, h, repo::dir_stamp(&d2.join(v.to_string()))))
                .collect();
            (repo::list_versions(&d2), repo::read_labels(&d2), stamps)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let disk = disk?;
        if disk.is_empty() && !dir.is_dir() && !self.inner.models.contains_key(name) {
            // Never register a name that has no directory: a mistyped admin
            // call must change nothing (a registered ghost would take the
            // default model away from every request without a name).
            return Err(Error::UnknownModel {
                name: name.to_string(),
                available: self.available(),
            });
        }
        let m = self.ensure_model(name);
        match labels {
            Ok(l) => *lock(&m.labels) = l,
            Err(e) => tracing::warn!(model = %name, error = %e, "labels file ignored"),
        }
        {
            let mut vs = lock(&m.versions);
            for &v in &disk {
                vs.entry(v).or_insert_with(|| {
                    VersionStatus::new(VersionState::Unloaded, "not selected by the version policy")
                });
            }
            // A FAILED version whose files changed, and have not changed for
            // the debounce interval, is eligible again (the policy decides
            // whether it loads).
            let settled_before = SystemTime::now()
                .checked_sub(self.inner.cfg.debounce)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            for (v, old, now) in stamps {
                let settled = now.newest.is_none_or(|t| t <= settled_before);
                if now.hash == old || !settled || !disk.contains(&v) {
                    continue;
                }
                if let Some(s) = vs.get_mut(&v)
                    && s.state == VersionState::Failed
                {
                    tracing::info!(model = %name, version = v,
                        "files of a failed version changed: trying it again");
                    s.set(
                        VersionState::Unloaded,
                        "files changed since the failed load: to be tried again",
                    );
                    s.failed_stamp = None;
                }
            }
        }
        loop {
            let to_load: Vec<u64> = {
                let vs = lock(&m.versions);
                let available: Vec<u64> = disk
                    .iter()
                    .copied()
                    .filter(|v| {
                        vs.get(v)
                            .is_none_or(|s| s.state != VersionState::Failed && !s.pinned_out)
                    })
                    .collect();
                let mut wanted: BTreeSet<u64> = m.policy.wanted(&available).into_iter().collect();
                for &lv in lock(&m.labels).values() {
                    if available.contains(&lv) {
                        wanted.insert(lv);
                    }
                }
                wanted
                    .into_iter()
                    .rev()
                    .filter(|v| vs.get(v).is_none_or(|s| s.state != VersionState::Ready))
                    .collect()
            };
            if to_load.is_empty() {
                break;
            }
            for v in to_load {
                self.load_version(&m, v).await;
            }
        }
        self.refresh_default(&m);
        self.prune(&m, &disk);
        Ok(())
    }

    async fn load_version(&self, m: &Arc<ModelState>, version: u64) -> bool {
        {
            let mut vs = lock(&m.versions);
            let s = vs
                .entry(version)
                .or_insert_with(|| VersionStatus::new(VersionState::Loading, ""));
            s.set(VersionState::Loading, "");
        }
        self.bump();
        let dir = self.inner.cfg.root.join(&m.name).join(version.to_string());
        let name = m.name.clone();
        let verify = self.inner.cfg.verify_golden;
        let root = self.inner.cfg.root.clone();
        tracing::info!(model = %name, version, dir = %dir.display(), "loading version");
        let nice = self.inner.cfg.load_nice;
        let indexes = self.inner.cfg.indexes.clone();
        // A thread of its own (not the blocking pool, whose threads are
        // shared with request work) so its priority can be lowered for good.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("profiled-load".into())
            .spawn(move || {
                crate::lower_thread_priority(nice);
                // Stamped before the load: a change during it is seen.
                let stamp = repo::dir_stamp(&dir);
                // Nothing outside the repository is opened (symlinks resolved).
                let r = repo::check_version_dir(&root, &dir)
                    .and_then(|()| Generation::load_with(&name, version, &dir, verify, &*indexes));
                let _ = tx.send((stamp, r));
            });
        let (stamp, res) = match spawned {
            Ok(_) => match rx.await {
                Ok((stamp, r)) => (Some(stamp.hash), r),
                Err(_) => (
                    None,
                    Err(Error::Internal(
                        "the loading thread ended without an answer".into(),
                    )),
                ),
            },
            Err(e) => (
                None,
                Err(Error::Internal(format!(
                    "cannot start a loading thread: {e}"
                ))),
            ),
        };
        let ok = match res {
            Ok(g) => {
                let g = Arc::new(g);
                let key = (m.name.clone(), version);
                match self.inner.slots.get(&key) {
                    Some(slot) => slot.value().store(g.clone()),
                    None => {
                        self.inner
                            .slots
                            .insert(key, Arc::new(ArcSwap::new(g.clone())));
                    }
                }
                let mut vs = lock(&m.versions);
                let s = vs
                    .entry(version)
                    .or_insert_with(|| VersionStatus::new(VersionState::Ready, ""));
                s.set(VersionState::Ready, "");
                s.failed_stamp = None;
                s.generation_id = g.id;
                s.load_duration = Some(g.load_duration);
                s.pinned_out = false;
                metrics::counter!("profiled_model_loads_total", "model" => m.name.clone(), "version" => version.to_string(), "outcome" => "ready").increment(1);
                tracing::info!(model = %m.name, version, generation = g.id,
                    load_ms = g.load_duration.as_millis() as u64, "version ready");
                true
            }
            Err(e) => {
                let reason = match &e {
                    Error::Load { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let mut vs = lock(&m.versions);
                let s = vs
                    .entry(version)
                    .or_insert_with(|| VersionStatus::new(VersionState::Failed, ""));
                s.set(VersionState::Failed, reason.clone());
                s.failures += 1;
                s.failed_stamp = stamp;
                metrics::counter!("profiled_model_loads_total", "model" => m.name.clone(), "version" => version.to_string(), "outcome" => "failed").increment(1);
                tracing::warn!(model = %m.name, version, reason = %reason, "version refused");
                false
            }
        };
        self.bump();
        ok
    }

    /// Points the default at the newest READY version the policy allows.
    fn refresh_default(&self, m: &ModelState) {
        let ready: Vec<u64> = lock(&m.versions)
            .iter()
            .filter(|(v, s)| s.state == VersionState::Ready && m.policy.allows_default(**v))
            .map(|(v, _)| *v)
            .collect();
        let best = ready
            .iter()
            .rev()
            .find_map(|v| self.inner.slots.get(&(m.name.clone(), *v)))
            .map(|s| s.value().load_full());
        let current = m.default.load_full();
        let same = match (&current, &best) {
            (Some(a), Some(b)) => a.id == b.id,
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some(b) = &best {
                tracing::info!(model = %m.name, version = b.version, generation = b.id, "default version swapped");
                metrics::counter!("profiled_model_swaps_total", "model" => m.name.clone(), "version" => b.version.to_string())
                    .increment(1);
            }
            m.default.store(best);
            self.bump();
        }
    }

    /// Unloads READY versions the policy no longer keeps (labelled versions
    /// and the default are always kept).
    fn prune(&self, m: &ModelState, disk: &[u64]) {
        let default = m.default.load().as_ref().map(|g| g.version);
        let labelled: BTreeSet<u64> = lock(&m.labels).values().copied().collect();
        let mut dropped = Vec::new();
        {
            let mut vs = lock(&m.versions);
            let available: Vec<u64> = disk
                .iter()
                .copied()
                .filter(|v| {
                    vs.get(v)
                        .is_none_or(|s| s.state != VersionState::Failed && !s.pinned_out)
                })
                .collect();
            let keep: BTreeSet<u64> = m.policy.wanted(&available).into_iter().collect();
            for (v, s) in vs.iter_mut() {
                if s.state == VersionState::Ready
                    && !keep.contains(v)
                    && !labelled.contains(v)
                    && Some(*v) != default
                {
                    let old = self
                        .inner
                        .slots
                        .remove(&(m.name.clone(), *v))
                        .map(|(_, slot)| slot.load_full());
                    s.set_unloaded(
                        format!("dropped by the version policy ({})", m.policy),
                        old.as_ref(),
                    );
                    dropped.push(*v);
                }
            }
        }
        for v in &dropped {
            metrics::counter!("profiled_model_unloads_total", "model" => m.name.clone(), "version" => v.to_string(), "reason" => "policy").increment(1);
            tracing::info!(model = %m.name, version = *v, "version unloaded by the policy");
        }
        if !dropped.is_empty() {
            self.bump();
        }
    }

    /// Checks, changing nothing, that [`Store::reload`] can do what it is
    /// asked: the model is known or has a directory in the repository, and a
    /// named version is a positive integer with a directory. Call it before
    /// running a reload in the background, so that a call that cannot be
    /// done is refused whether or not the caller waits.
    pub fn check_reload(&self, model: &str, version: Option<u64>) -> Result<()> {
        if model.is_empty() {
            return match version {
                Some(_) => Err(Error::Precondition(
                    "version: a version needs a model name".into(),
                )),
                None => Ok(()),
            };
        }
        repo::validate_model_name(model)?;
        let model_dir = self.inner.cfg.root.join(model);
        if !self.inner.models.contains_key(model) && !model_dir.is_dir() {
            return Err(Error::UnknownModel {
                name: model.to_string(),
                available: self.available(),
            });
        }
        match version {
            Some(0) => Err(Error::InvalidVersion(0)),
            Some(v) if !model_dir.join(v.to_string()).is_dir() => Err(Error::VersionNotReady {
                model: model.to_string(),
                version: v,
                state: format!("no directory {v} in the repository for model {model:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// Rescans now (one model or all). With `version` (requires a model), loads
    /// or retries exactly that version even if FAILED or UNLOADED. A call that
    /// [`Store::check_reload`] refuses changes nothing.
    pub async fn reload(&self, model: &str, version: Option<u64>) -> Result<()> {
        self.check_reload(model, version)?;
        if model.is_empty() {
            return self.scan().await;
        }
        let Some(v) = version else {
            return self.scan_model(model).await;
        };
        let _guard = self.inner.scan_lock.lock().await;
        // Checked again under the lock: the directory may have gone since.
        self.check_reload(model, version)?;
        let m = self.ensure_model(model);
        if let Some(s) = lock(&m.versions).get_mut(&v) {
            s.pinned_out = false;
        }
        let ok = self.load_version(&m, v).await;
        self.refresh_default(&m);
        if ok {
            Ok(())
        } else {
            let reason = lock(&m.versions)
                .get(&v)
                .map(|s| s.reason.clone())
                .unwrap_or_default();
            Err(Error::Load {
                model: model.to_string(),
                version: v,
                reason,
            })
        }
    }

    /// Points `label` at a READY `version` (`Some`) or removes it (`None`);
    /// persisted in the model's `labels.json`.
    pub fn set_label(&self, model: &str, label: &str, version: Option<u64>) -> Result<()> {
        repo::validate_label(label)?;
        let (name, m) = self.model(model)?;
        let mut labels = lock(&m.labels).clone();
        match version {
            Some(v) => {
                let ready = lock(&m.versions)
                    .get(&v)
                    .is_some_and(|s| s.state == VersionState::Ready);
                if !ready {
                    return Err(Error::Precondition(format!(
                        "version: model {name:?} version {v} is not READY"
                    )));
                }
                labels.insert(label.to_string(), v);
            }
            None => {
                if labels.remove(label).is_none() {
                    return Err(Error::UnknownLabel {
                        model: name,
                        label: label.to_string(),
                    });
                }
            }
        }
        repo::write_labels(&self.inner.cfg.root.join(&name), &labels)?;
        *lock(&m.labels) = labels;
        self.bump();
        Ok(())
    }

    /// Stops serving `version`; in-flight requests finish on it and its
    /// memory is released when they drop their references. Without `force`
    /// a labelled version or the only READY version is refused.
    pub fn unload(&self, model: &str, version: u64, force: bool) -> Result<()> {
        let (name, m) = self.model(model)?;
        let ready: Vec<u64> = lock(&m.versions)
            .iter()
            .filter(|(_, s)| s.state == VersionState::Ready)
            .map(|(v, _)| *v)
            .collect();
        if !ready.contains(&version) {
            return Err(Error::VersionNotReady {
                model: name,
                version,
                state: "not READY".into(),
            });
        }
        let labelled: Vec<String> = lock(&m.labels)
            .iter()
            .filter(|(_, v)| **v == version)
            .map(|(l, _)| l.clone())
            .collect();
        if !force {
            if !labelled.is_empty() {
                return Err(Error::Precondition(format!(
                    "version {version} is labelled ({}); use force",
                    labelled.join(", ")
                )));
            }
            if ready.len() == 1 {
                return Err(Error::Precondition(format!(
                    "version {version} is the only READY version of {name:?}; use force"
                )));
            }
        }
        if !labelled.is_empty() {
            let mut labels = lock(&m.labels).clone();
            labels.retain(|_, v| *v != version);
            repo::write_labels(&self.inner.cfg.root.join(&name), &labels)?;
            *lock(&m.labels) = labels;
        }
        let old = self
            .inner
            .slots
            .remove(&(name.clone(), version))
            .map(|(_, slot)| slot.load_full());
        if let Some(s) = lock(&m.versions).get_mut(&version) {
            s.set_unloaded("unloaded by ModelAdmin.Unload", old.as_ref());
            s.pinned_out = true;
        }
        drop(old);
        metrics::counter!("profiled_model_unloads_total", "model" => name.clone(), "version" => version.to_string(), "reason" => "admin").increment(1);
        self.refresh_default(&m);
        self.bump();
        Ok(())
    }
}
