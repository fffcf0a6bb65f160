//! `botbox run`: the long-running host, with live reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ExitCode;
use crate::app::App;
use crate::config::Config;
use crate::runtime::reload::{Change, Watcher};
use crate::triggers;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run the embedded demo: the example bots delivering to local
    /// simulators of the four providers.
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
    /// Do not watch plugin files and the config (overrides `runtime.reload`).
    #[arg(long)]
    pub no_reload: bool,
    /// Stop after this many seconds (for demos and smoke tests).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<u64>,
}

/// One config's worth of running tasks: delivery workers, schedules and
/// delivery reports. A config reload stops one and starts the next.
struct Generation {
    app: Arc<App>,
    stop: CancellationToken,
    workers: TaskTracker,
    tasks: TaskTracker,
}

impl Generation {
    fn start(app: Arc<App>) -> Generation {
        let stop = CancellationToken::new();
        let workers = app.delivery.start(stop.clone());
        let tasks = TaskTracker::new();
        triggers::schedule::start(&app.config, app.runtime.clone(), stop.clone(), &tasks);
        triggers::start_listeners(&app, stop.clone(), &tasks);
        tasks.spawn(triggers::reports::run(
            app.delivery.clone(),
            app.runtime.clone(),
            stop.clone(),
        ));
        tasks.close();
        Generation {
            app,
            stop,
            workers,
            tasks,
        }
    }

    /// Triggers and workers stop taking new work; calls and requests in
    /// flight finish; everything not yet sent stays queued on disk.
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
        self.workers.wait().await;
    }
}

fn watch_all(watcher: &mut Watcher, config: &Config, config_path: Option<&PathBuf>) {
    watcher.clear();
    if let Some(path) = config_path
        && let Err(e) = watcher.watch(path, Change::Config)
    {
        tracing::warn!("{e}; config changes need a restart");
    }
    for (name, plugin) in &config.plugins {
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
async fn reload_config(current: Generation, path: &std::path::Path) -> Generation {
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
    Generation::start(Arc::new(next))
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, _simulators) = if args.demo {
        let (config, sim) = super::demo_config().await?;
        tracing::info!(
            bbb = %sim.bbb_url(),
            tencent = %sim.tencent_url(),
            easemob = %sim.easemob_url(),
            bitrix24 = %sim.bitrix_url(),
            "demo: provider simulators are running"
        );
        (config, Some(sim))
    } else {
        (super::load_config(args.config.as_ref())?, None)
    };
    let config_path = if args.demo {
        None
    } else {
        Some(
            args.config
                .clone()
                .unwrap_or_else(|| PathBuf::from("botbox.toml")),
        )
    };
    let reload = config.runtime.reload && !args.no_reload;
    let app = App::build(config)?;
    let errors = app.load_plugins().await;
    for e in &errors {
        tracing::error!("{e}");
    }
    let loaded = app.runtime.plugin_names();
    if loaded.is_empty() && !reload {
        anyhow::bail!(
            "no plugin could be loaded; fix the errors above (`botbox check` lists them)"
        );
    }
    tracing::info!(plugins = ?loaded, reload, "botbox is running; Ctrl-C stops it");

    let mut watcher = None;
    let mut changes = None;
    if reload {
        let (mut w, rx) = Watcher::start()?;
        watch_all(&mut w, &app.config, config_path.as_ref());
        watcher = Some(w);
        changes = Some(rx);
    }
    let mut generation = Generation::start(Arc::new(app));

    let exit_after = async {
        match args.exit_after {
            Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exit_after);
    loop {
        let change = async {
            match changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("Ctrl-C: finishing calls in flight, then stopping");
                break;
            }
            _ = &mut exit_after => {
                tracing::info!("--exit-after reached: stopping");
                break;
            }
            Some(change) = change => match change {
                Change::Plugin(name) => reload_plugin(&generation.app, &name).await,
                Change::Config => {
                    if let Some(path) = &config_path {
                        generation = reload_config(generation, path).await;
                        if let Some(w) = watcher.as_mut() {
                            watch_all(w, &generation.app.config, config_path.as_ref());
                        }
                    }
                }
            }
        }
    }
    generation.stop().await;
    tracing::info!("stopped");
    Ok(0)
}
