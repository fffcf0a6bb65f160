//! `botbox run`: the long-running host.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ExitCode;
use crate::app::App;
use crate::triggers;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run the embedded demo config: the example bots on console channels.
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
    /// Stop after this many seconds (for demos and smoke tests).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<u64>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_ref(), args.demo)?;
    let app = App::build(config)?;
    let errors = app.load_plugins().await;
    for e in &errors {
        tracing::error!("{e}");
    }
    let loaded = app.runtime.plugin_names();
    if loaded.is_empty() {
        anyhow::bail!(
            "no plugin could be loaded; fix the errors above (`botbox check` lists them)"
        );
    }
    tracing::info!(plugins = ?loaded, "botbox is running; Ctrl-C stops it");

    let stop = CancellationToken::new();
    let deliveries = app.delivery.start(stop.clone());
    let tasks = TaskTracker::new();
    triggers::schedule::start(&app.config, app.runtime.clone(), stop.clone(), &tasks);
    tasks.spawn(triggers::reports::run(
        app.delivery.clone(),
        app.runtime.clone(),
        stop.clone(),
    ));
    tasks.close();

    let exit_after = async {
        match args.exit_after {
            Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: finishing calls in flight, then stopping"),
        _ = exit_after => tracing::info!("--exit-after reached: stopping"),
    }
    // Triggers and workers stop taking new work; calls and requests in
    // flight finish; everything not yet sent stays queued on disk.
    stop.cancel();
    tasks.wait().await;
    deliveries.wait().await;
    tracing::info!("stopped");
    Ok(0)
}
