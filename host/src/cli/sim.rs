//! `botbox sim`: the provider simulators, for local development (the demo's
//! are started by `crate::app::demo`).

use std::path::PathBuf;

use botbox_sim::{Sim, SimConfig, SimPorts};
use clap::Args;

use super::ExitCode;

/// `botbox sim`'s arguments.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Listen on consecutive ports from this one, one per simulator in
    /// botbox-sim's order (BigBlueButton, Tencent, Easemob, Bitrix24),
    /// instead of free ones.
    #[arg(long, value_name = "PORT")]
    pub ports: Option<u16>,
    /// Run the simulators' clocks this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Write the simulators' credentials as secret files here, and print a
    /// botbox.toml that uses them.
    #[arg(long, default_value = ".botbox/sim-secrets")]
    pub secrets: PathBuf,
}

// Tests and benches reach these as `botbox::cli::sim::…`.
pub use crate::app::demo::{provider_sections, write_secrets};

/// `botbox sim`: runs the simulators until Ctrl-C.
pub async fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = SimConfig::demo();
    cfg.time_scale = args.time_scale;
    if let Some(first) = args.ports {
        cfg.ports = Some(SimPorts::consecutive(first));
    }
    write_secrets(&args.secrets, &cfg)?;
    let sim = Sim::start(cfg).await?;
    let secrets = args.secrets.canonicalize().unwrap_or(args.secrets.clone());
    println!("# Provider simulators are running. Ctrl-C stops them.");
    println!(
        "# Paste these providers into botbox.toml; the secrets are files in {}",
        secrets.display()
    );
    println!();
    print!("{}", provider_sections(&sim, &secrets));
    if args.time_scale != 1.0 {
        println!(
            "\n# The simulators run {}x faster: set this in botbox.toml too.",
            args.time_scale
        );
        // The simulators count Easemob's day by their own calendar, which
        // starts at their wall-clock start; the host's must start there too.
        println!(
            "[runtime]\ntime_scale = {}\ntime_origin_ms = {}",
            args.time_scale,
            sim.calendar_origin_ms()
        );
    }
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(0)
}
