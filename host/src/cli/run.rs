//! `botbox run`: the long-running host, with live reload.

use std::path::PathBuf;

use clap::Args;

use super::ExitCode;
use crate::app::supervisor::Supervisor;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run the embedded demo: the example bots delivering to local
    /// simulators of every provider.
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
    /// Do not watch plugin files and the config (overrides `runtime.reload`).
    #[arg(long)]
    pub no_reload: bool,
    /// Stop after this many seconds (for demos and smoke tests).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<u64>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (config, _simulators) = if args.demo {
        let (config, sim) = crate::app::demo::config().await?;
        let urls: Vec<String> = botbox_sim::SimProvider::ALL
            .iter()
            .map(|p| format!("{}={}", p.as_str(), sim.url(*p)))
            .collect();
        tracing::info!(
            simulators = %urls.join(" "),
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
    let telemetry = match &config.telemetry {
        Some(settings) => Some(crate::telemetry::start(settings)?),
        None => None,
    };
    let supervisor = Supervisor::start(config, config_path, reload).await?;
    let shutdown = async {
        let exit_after = async {
            match args.exit_after {
                Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("Ctrl-C: finishing calls in flight, then stopping");
            }
            _ = exit_after => {
                tracing::info!("--exit-after reached: stopping");
            }
        }
    };
    supervisor.run_until(shutdown).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    Ok(0)
}
