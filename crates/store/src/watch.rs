//! The repository watcher: file-system events (notify, debounced) plus a
//! periodic poll, both triggering [`Store::scan`].

use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::store::Store;

/// Keeps the watcher running; dropping it (or [`WatcherHandle::stop`]) stops
/// watching and polling.
#[derive(Debug)]
pub struct WatcherHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WatcherHandle {
    /// Stops the watcher.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Starts watching the repository: debounced file-system events and a poll
    /// every `poll_interval` both trigger a rescan (inotify misses changes on
    /// network volumes, hence the poll). Must be called inside a tokio runtime.
    pub fn spawn_watcher(&self) -> WatcherHandle {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let root = self.config().root.clone();
        let debounce = self.config().debounce;
        let poll = self.config().poll_interval.max(Duration::from_millis(50));
        let debouncer = {
            let tx = tx.clone();
            new_debouncer(debounce, None, move |res: DebounceEventResult| {
                if res.is_ok() {
                    let _ = tx.try_send(());
                }
            })
        };
        let debouncer = match debouncer {
            Ok(mut d) => match d.watch(&root, RecursiveMode::Recursive) {
                Ok(()) => Some(d),
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e,
                        "cannot watch the repository; relying on the poll");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; relying on the poll");
                None
            }
        };
        let store = self.clone();
        let task = tokio::spawn(async move {
            let _debouncer = debouncer;
            let _tx = tx;
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(()) = rx.recv() => {}
                }
                if let Err(e) = store.scan().await {
                    tracing::warn!(error = %e, "repository scan failed");
                }
            }
        });
        WatcherHandle { task }
    }
}
