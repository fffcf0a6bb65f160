//! `botbox sim`: the provider simulators, for local development, and the
//! simulated providers behind `botbox run --demo`.

use std::path::{Path, PathBuf};

use botbox_sim::{Sim, SimConfig, SimPorts};
use clap::Args;

use super::ExitCode;

/// `botbox sim`'s arguments.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Listen on four consecutive ports from this one (BigBlueButton,
    /// Tencent, Easemob, Bitrix24) instead of free ones.
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

/// Writes the simulators' credentials as secret files, so configs refer to
/// them as `{ file = … }` exactly as they would to real ones.
pub fn write_secrets(dir: &Path, cfg: &SimConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, value) in [
        ("bbb-secret", &cfg.bbb.secret),
        ("tencent-secret-key", &cfg.tencent.secret_key),
        ("easemob-client-id", &cfg.easemob.client_id),
        ("easemob-client-secret", &cfg.easemob.client_secret),
        ("bitrix-webhook-code", &cfg.bitrix.webhook_code),
    ] {
        std::fs::write(dir.join(name), value)?;
    }
    Ok(())
}

/// Provider sections for a running simulator, with secrets from `secrets`.
pub fn provider_sections(sim: &Sim, secrets: &Path) -> String {
    let cfg = sim.config();
    let file =
        |name: &str| toml::Value::String(secrets.join(name).display().to_string()).to_string();
    format!(
        r#"[providers.bbb]
kind = "bigbluebutton"
url = "{bbb}"
secret = {{ file = {bbb_secret} }}
checksum = "sha256"

[providers.tencent]
kind = "tencent"
url = "{tencent}"
sdkappid = {sdkappid}
identifier = "{identifier}"
secret_key = {{ file = {tencent_key} }}

[providers.easemob]
kind = "easemob"
url = "{easemob}"
org = "{org}"
app = "{app}"
client_id = {{ file = {em_id} }}
client_secret = {{ file = {em_secret} }}

[providers.bitrix24]
kind = "bitrix24"
url = "{bitrix}"
webhook = {{ user_id = {user_id}, code = {{ file = {b24_code} }} }}
"#,
        bbb = sim.bbb_url(),
        bbb_secret = file("bbb-secret"),
        tencent = sim.tencent_url(),
        sdkappid = cfg.tencent.sdkappid,
        identifier = cfg.tencent.identifier,
        tencent_key = file("tencent-secret-key"),
        easemob = sim.easemob_url(),
        org = cfg.easemob.org,
        app = cfg.easemob.app,
        em_id = file("easemob-client-id"),
        em_secret = file("easemob-client-secret"),
        bitrix = sim.bitrix_url(),
        user_id = cfg.bitrix.webhook_user_id,
        b24_code = file("bitrix-webhook-code"),
    )
}

/// Starts the demo's simulators and returns them with the demo config text:
/// the embedded demo config with the simulators' provider sections.
pub async fn start_demo(state_dir: &Path) -> anyhow::Result<(Sim, String)> {
    let cfg = SimConfig::demo();
    let secrets = state_dir.join("sim-secrets");
    write_secrets(&secrets, &cfg)?;
    let sim = Sim::start(cfg).await?;
    // The webhook listener's port: free now, bound by the host at start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        "{}\n{}\n{}",
        super::DEMO_CONFIG,
        provider_sections(&sim, &secrets),
        demo_webhooks(port, &secrets),
    );
    // The full loop: the BBB hook is registered the way an operator does
    // (`botbox webhooks register`), and someone in room-1 keeps asking the
    // `commands` bot things; its answers come back into room-1.
    let parsed = crate::config::Config::parse(&config, Path::new("<demo>"), state_dir)?;
    match crate::triggers::webhooks::register::register_bbb(&parsed, "bbb", None).await {
        Ok(_) => sim.bbb_start_chatter(
            "room-1",
            ["!help", "!time", "!roll 2d6", "!echo hello from room-1"]
                .map(String::from)
                .to_vec(),
            std::time::Duration::from_secs(8),
        ),
        Err(e) => tracing::warn!("demo: the BBB webhook was not registered: {e}"),
    }
    Ok((sim, config))
}

/// The `[webhooks]` listener of the demo and the BBB simulator's inbound
/// secret (bbb-webhooks signs with the server's shared secret).
fn demo_webhooks(port: u16, secrets: &Path) -> String {
    let file = toml::Value::String(secrets.join("bbb-secret").display().to_string());
    format!(
        "[webhooks]\nlisten = \"127.0.0.1:{port}\"\n\n[providers.bbb.inbound]\nsecret = {{ file = {file} }}\n"
    )
}

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
        println!("[runtime]\ntime_scale = {}", args.time_scale);
    }
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(0)
}
