//! A running host: the tasks of one config (a [`Generation`]), config and
//! plugin reload, and stopping in order. `botbox run` runs a [`Supervisor`];
//! `botbox call` and `botbox dev` run a generation of delivery workers only
//! and send their events themselves.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{App, StartError};
use crate::config::{Config, PluginSource};
use crate::runtime::HandleError;
use crate::runtime::reload::{Change, PinnedFiles, WatchError, Watcher};
use crate::triggers;
use crate::wit::types::Event;

/// What a generation runs besides its delivery workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggers {
    /// Delivery workers only: the caller sends the events (`botbox call`,
    /// `botbox dev`).
    None,
    /// Schedules, the webhook and admin listeners and delivery reports too
    /// (`botbox run`).
    All,
}

/// One config's worth of running tasks: delivery workers, and with
/// [`Triggers::All`] schedules, listeners and delivery reports. A config
/// reload stops one and starts the next.
pub struct Generation {
    app: Arc<App>,
    stop: CancellationToken,
    workers: TaskTracker,
    tasks: TaskTracker,
}

/// The parts of `app` its listeners serve.
fn listened(app: &App) -> triggers::Host<'_> {
    triggers::Host {
        config: &app.config,
        runtime: &app.runtime,
        delivery: &app.delivery,
        webhooks: &app.webhooks,
        admin: &app.admin,
        shared: &app.shared,
    }
}

impl Generation {
    /// Starts the delivery workers of `app`, and with [`Triggers::All`] its
    /// schedules, listeners and delivery reports.
    pub fn start(app: Arc<App>, triggers: Triggers) -> Generation {
        let stop = CancellationToken::new();
        let workers = app.delivery.start(stop.clone());
        let tasks = TaskTracker::new();
        if triggers == Triggers::All {
            triggers::schedule::start(&app.config, app.runtime.clone(), stop.clone(), &tasks);
            triggers::start_listeners(listened(&app), stop.clone(), &tasks);
            tasks.spawn(triggers::reports::run(
                app.delivery.clone(),
                app.runtime.clone(),
                stop.clone(),
            ));
        }
        tasks.close();
        Generation {
            app,
            stop,
            workers,
            tasks,
        }
    }

    /// The host this generation runs.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// One event into one plugin, then up to `wait` for what it sent to
    /// be delivered (`botbox call`).
    pub async fn call(&self, plugin: &str, event: &Event, wait: Duration) -> Called {
        let mut receipts = self.app.delivery.observers().accepted.subscribe();
        let started = Instant::now();
        let result = self.app.runtime.dispatch(plugin, event).await;
        let elapsed = started.elapsed();
        let mut ids = Vec::new();
        while let Ok(a) = receipts.try_recv() {
            ids.push(a.receipt.id);
        }
        let still_queued = self.app.delivery.wait_for(&ids, wait).await;
        Called {
            result,
            elapsed,
            still_queued,
        }
    }

    /// Triggers and workers stop taking new work; calls and requests in
    /// flight finish (listeners within their shutdown deadline); everything
    /// not yet sent stays queued on disk.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
        self.workers.wait().await;
    }
}

/// How one [`Generation::call`] went.
pub struct Called {
    /// What the plugin's `handle` returned.
    pub result: Result<(), HandleError>,
    /// How long the call took, delivery not counted.
    pub elapsed: Duration,
    /// Receipts of messages not yet delivered when the wait ran out.
    pub still_queued: Vec<String>,
}

/// Why `botbox run` could not start a host.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config, the storage or the engine.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The file watcher for live reload.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// Not one plugin loaded, and no reload to fix it.
    #[error("no plugin could be loaded; fix the errors above (`botbox check` lists them)")]
    NoPlugins,
}

/// The long-running host of `botbox run`: one generation at a time, with
/// live reload of plugin files and of the config.
pub struct Supervisor {
    generation: Generation,
    config_path: Option<PathBuf>,
    watcher: Option<Watcher>,
    changes: Option<mpsc::UnboundedReceiver<Change>>,
}

impl Supervisor {
    /// Builds the host for `config`, loads its plugins (logging the ones
    /// that fail) and starts everything. With `reload`, the config file
    /// (`config_path`, when there is one) and every plugin file are watched.
    /// Without reload, a host with no plugin loaded does not start.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        reload: bool,
    ) -> Result<Supervisor, RunError> {
        let app = App::build(config)?;
        let errors = app.load_plugins().await;
        for e in &errors {
            tracing::error!("{e}");
        }
        let loaded = app.runtime.plugin_names();
        if loaded.is_empty() && !reload {
            return Err(RunError::NoPlugins);
        }
        tracing::info!(plugins = ?loaded, reload, "botbox is running; Ctrl-C stops it");

        let mut watcher = None;
        let mut changes = None;
        if reload {
            let (mut w, rx) = Watcher::start()?;
            watch_all(&mut w, &app.config, config_path.as_deref());
            watcher = Some(w);
            changes = Some(rx);
        }
        Ok(Supervisor {
            generation: Generation::start(Arc::new(app), Triggers::All),
            config_path,
            watcher,
            changes,
        })
    }

    /// Serves until `shutdown` completes, applying each saved change: a
    /// plugin file reloads that plugin, the config file the whole config
    /// (or nothing, if it is refused). Then stops the generation in service.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let Supervisor {
            mut generation,
            config_path,
            mut watcher,
            mut changes,
        } = self;
        tokio::pin!(shutdown);
        let mut pins = PinnedFiles::default();
        loop {
            let change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(change) = change => match change {
                    Change::Plugin(name) => {
                        let allowed = generation.app.config.plugins.get(&name)
                            .is_some_and(|p| pins.allows_reload(&name, p));
                        if allowed {
                            reload_plugin(&generation.app, &name).await;
                        }
                    }
                    Change::Config => {
                        if let Some(path) = &config_path {
                            generation = reload_config(generation, path).await;
                            if let Some(w) = watcher.as_mut() {
                                watch_all(w, &generation.app.config, config_path.as_deref());
                            }
                        }
                    }
                }
            }
        }
        generation.stop().await;
        tracing::info!("stopped");
    }
}

fn watch_all(watcher: &mut Watcher, config: &Config, config_path: Option<&Path>) {
    watcher.clear();
    if let Some(path) = config_path
        && let Err(e) = watcher.watch(path, Change::Config)
    {
        tracing::warn!("{e}; config changes need a restart");
    }
    for (name, plugin) in &config.plugins {
        // A registry plugin's file is the pull cache's copy of its pin,
        // which nothing edits: a new version is a new pin in the config.
        if matches!(plugin.source, PluginSource::Oci(_)) {
            continue;
        }
        if let Err(e) = watcher.watch(&plugin.path, Change::Plugin(name.clone())) {
            tracing::warn!(plugin = %name, "{e}; changes to it need a restart");
        }
    }
}

async fn reload_plugin(app: &App, name: &str) {
    let Some(plugin_config) = app.config.plugins.get(name) else {
        return;
    };
    let started = Instant::now();
    match app.runtime.load(name, plugin_config).await {
        Ok(p) => {
            app.shared.metrics.reload("plugin", "ok");
            tracing::info!(
                plugin = name,
                generation = p.generation,
                compile = ?p.compile_source,
                ms = started.elapsed().as_millis() as u64,
                "reloaded"
            )
        }
        Err(e) => {
            app.shared.metrics.reload("plugin", "refused");
            tracing::error!("{e}; the running version stays in service")
        }
    }
}

/// Applies a changed config whole, or refuses it whole.
async fn reload_config(current: Generation, path: &Path) -> Generation {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            current.app.shared.metrics.reload("config", "refused");
            tracing::error!("config not reloaded, the running one stays in force: {e}");
            return current;
        }
    };
    let (next, plugins) = match current.app.rebuild(config).await {
        Ok(built) => built,
        Err(e) => {
            current.app.shared.metrics.reload("config", "refused");
            tracing::error!("config not reloaded, the running one stays in force: {e}");
            return current;
        }
    };
    current.stop().await;
    next.shared.metrics.reload("config", "ok");
    next.activate(plugins);
    tracing::info!(plugins = ?next.runtime.plugin_names(), "config reloaded");
    Generation::start(Arc::new(next), Triggers::All)
}
