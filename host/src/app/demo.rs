//! `botbox run --demo` and `botbox check --demo`: the embedded demo config,
//! with local simulators of the four providers standing in for the real ones.

use std::path::Path;

use botbox_sim::{Sim, SimConfig};

use crate::config::Config;
use crate::triggers::webhooks::register::register_bbb;

/// The demo config, embedded so `botbox run --demo` works with no files
/// but the example plugins (built by `cargo xtask plugins`).
pub const CONFIG: &str = include_str!("../../../demo/botbox.toml");

/// The demo config with its simulators' providers; the simulators run as
/// long as the returned handle lives. Their state goes under
/// `target/demo-state` of the current folder.
pub async fn config() -> anyhow::Result<(Config, Sim)> {
    let cwd = std::env::current_dir()?;
    let (sim, text) = start(&cwd.join("target/demo-state")).await?;
    let config = Config::parse(&text, Path::new("<embedded demo botbox.toml>"), &cwd)?;
    Ok((config, sim))
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
pub async fn start(state_dir: &Path) -> anyhow::Result<(Sim, String)> {
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
        CONFIG,
        provider_sections(&sim, &secrets),
        webhooks(port, &secrets),
    );
    // The full loop: the BBB hook is registered the way an operator does
    // (`botbox webhooks register`), and someone in room-1 keeps asking the
    // `commands` bot things; its answers come back into room-1.
    let parsed = Config::parse(&config, Path::new("<demo>"), state_dir)?;
    match register_bbb(&parsed, "bbb", None).await {
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
fn webhooks(port: u16, secrets: &Path) -> String {
    let file = toml::Value::String(secrets.join("bbb-secret").display().to_string());
    format!(
        "[webhooks]\nlisten = \"127.0.0.1:{port}\"\n\n[providers.bbb.inbound]\nsecret = {{ file = {file} }}\n"
    )
}
