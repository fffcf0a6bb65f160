//! Watching plugin files and the config, for live reload.
//!
//! Editors and build tools save in bursts (truncate, write, rename), so
//! changes are debounced and reported once per file. A write only says a
//! writer is busy, so it waits for [`DEBOUNCE`] of quiet; a close after
//! writing or a rename into place says the writer is done, so it waits only
//! [`SETTLE`], long enough to fold the events of one save together.
//!
//! Folders are watched, not files: a file replaced by a rename is a new
//! inode that a file watch would lose. Only writes, creations and renames
//! count: reading a plugin to compile it must not look like a change, or
//! every reload would trigger the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{PluginConfig, PluginSource, Sha256Digest};
use crate::sanitize;

/// How long a file must be quiet after a write before its change is
/// reported, when nothing says the writer has finished.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long after a close-after-write or a rename into place: the events of
/// one save (rename, then the directory's own events) arrive within it.
pub const SETTLE: Duration = Duration::from_millis(5);

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The config file.
    Config,
    /// The file of the plugin of this name.
    Plugin(String),
}

type Watched = Arc<Mutex<Vec<(PathBuf, Change)>>>;

/// Watches the config file and every plugin file; drop it to stop.
pub struct Watcher {
    watcher: RecommendedWatcher,
    watched_dirs: BTreeSet<PathBuf>,
    files: Watched,
}

/// A file or folder that cannot be watched, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch `{path}` for changes: {reason}")]
pub struct WatchError {
    path: String,
    reason: String,
}

fn canonical(path: &Path) -> PathBuf {
    // The file may not exist yet (a plugin still being built): resolve the
    // folder, which must.
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Whether a file event says its writer is done: closed after writing, or
/// renamed into place.
pub fn is_settled(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Whether a file event changed what a file holds: writes, creations and
/// renames, not reads or metadata.
pub fn is_content_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

impl Watcher {
    /// Reports changes on the returned channel. Needs a tokio runtime.
    pub fn start() -> Result<(Watcher, mpsc::UnboundedReceiver<Change>), WatchError> {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(Change, Duration)>();
        let (tx, rx) = mpsc::unbounded_channel();
        let files: Watched = Default::default();
        let lookup = files.clone();
        let watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            let Ok(event) = result else { return };
            if !is_content_change(&event.kind) {
                return;
            }
            let quiet = if is_settled(&event.kind) {
                SETTLE
            } else {
                DEBOUNCE
            };
            let Ok(files) = lookup.lock() else { return };
            for path in &event.paths {
                let changed = canonical(path);
                for (file, change) in files.iter() {
                    if *file == changed {
                        let _ = raw_tx.send((change.clone(), quiet));
                    }
                }
            }
        })
        .map_err(|e| WatchError {
            path: "-".into(),
            reason: e.to_string(),
        })?;
        // Debounce: a change is reported once its file has been quiet for
        // as long as its last event asks.
        tokio::spawn(async move {
            let mut pending: BTreeMap<Change, Instant> = BTreeMap::new();
            loop {
                let next = pending.values().min().copied();
                tokio::select! {
                    received = raw_rx.recv() => match received {
                        // The latest event decides: a write after a close
                        // means the writer is busy again.
                        Some((change, quiet)) => {
                            pending.insert(change, Instant::now() + quiet);
                        }
                        None => return,
                    },
                    _ = async {
                        match next {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        let now = Instant::now();
                        let due: Vec<Change> = pending
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(c, _)| c.clone())
                            .collect();
                        for change in due {
                            pending.remove(&change);
                            if tx.send(change).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok((
            Watcher {
                watcher,
                watched_dirs: BTreeSet::new(),
                files,
            },
            rx,
        ))
    }

    /// Watches one more file. Watching the same file twice is harmless.
    pub fn watch(&mut self, path: &Path, change: Change) -> Result<(), WatchError> {
        let file = canonical(path);
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if !self.watched_dirs.contains(&dir) {
            self.watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
            self.watched_dirs.insert(dir);
        }
        if let Ok(mut files) = self.files.lock()
            && !files.iter().any(|(p, c)| *p == file && *c == change)
        {
            files.push((file, change));
        }
        Ok(())
    }

    /// Forgets every file; folders stay watched, which costs nothing.
    pub fn clear(&mut self) {
        if let Ok(mut files) = self.files.lock() {
            files.clear();
        }
    }
}

/// The pin check for a changed plugin file: a file pinned by
/// `plugins.NAME.sha256` that no longer has that digest is not reloaded, and
/// the log says so once per new content (an editor's burst of saves, or a
/// build tool rewriting the same output, is one line, not one per event).
#[derive(Debug, Default)]
pub struct PinnedFiles {
    reported: BTreeMap<String, Sha256Digest>,
}

impl PinnedFiles {
    /// Whether a change to plugin `name`'s file should reload it: always for
    /// an unpinned file, only when the file still has the pinned digest for
    /// a pinned one (then a reload is harmless, and it clears the record).
    pub fn allows_reload(&mut self, name: &str, config: &PluginConfig) -> bool {
        let (Some(pinned), PluginSource::File(path)) = (config.sha256, &config.source) else {
            return true;
        };
        // Unreadable (being rewritten, removed): the load reports it.
        let Ok(bytes) = std::fs::read(path) else {
            return true;
        };
        let found = Sha256Digest::of(&bytes);
        if found == pinned {
            self.reported.remove(name);
            return true;
        }
        if self.reported.get(name) != Some(&found) {
            tracing::warn!(
                plugin = name,
                path = %sanitize::for_log(&path.display().to_string(), 300),
                %pinned,
                %found,
                "the plugin's file changed on disk, but plugins.{name}.sha256 pins another \
                 digest: not reloaded, the running version stays in service. To run the new \
                 build, set plugins.{name}.sha256 = \"{}\"",
                found.hex()
            );
            self.reported.insert(name.to_string(), found);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    #[test]
    fn a_finished_save_settles_and_a_write_in_progress_does_not() {
        assert!(is_settled(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_settled(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(!is_settled(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(!is_settled(&EventKind::Create(CreateKind::File)));
        assert!(!is_settled(&EventKind::Modify(ModifyKind::Name(
            RenameMode::From
        ))));
    }
}

#[cfg(test)]
mod pin_tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn pinned_config(dir: &Path, pin: &Sha256Digest) -> PluginConfig {
        let text = format!(
            "[plugins.p]\npath = \"p.wasm\"\nsha256 = \"{}\"\n",
            pin.hex()
        );
        let config = Config::parse(&text, &dir.join("botbox.toml"), dir).unwrap();
        config.plugins["p"].clone()
    }

    #[test]
    fn a_pinned_file_with_another_digest_is_not_reloaded_and_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.wasm");
        std::fs::write(&file, b"first build").unwrap();
        let config = pinned_config(dir.path(), &Sha256Digest::of(b"first build"));
        let mut pins = PinnedFiles::default();
        assert!(
            pins.allows_reload("p", &config),
            "same digest: reload is fine"
        );

        std::fs::write(&file, b"second build").unwrap();
        assert!(!pins.allows_reload("p", &config));
        assert_eq!(
            pins.reported.get("p"),
            Some(&Sha256Digest::of(b"second build")),
            "reported once"
        );
        // The same content again is not reported again; the record stays.
        assert!(!pins.allows_reload("p", &config));
        assert_eq!(pins.reported.len(), 1);

        std::fs::write(&file, b"first build").unwrap();
        assert!(pins.allows_reload("p", &config), "back to the pinned build");
        assert!(pins.reported.is_empty());
    }

    #[test]
    fn an_unpinned_file_always_reloads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"x").unwrap();
        let config = Config::parse(
            "[plugins.p]\npath = \"p.wasm\"\n",
            &dir.path().join("botbox.toml"),
            dir.path(),
        )
        .unwrap();
        assert!(PinnedFiles::default().allows_reload("p", &config.plugins["p"]));
    }
}
