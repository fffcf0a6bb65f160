//! `botbox run --demo` and `botbox check --demo`: the embedded demo config,
//! with botbox-sim's local provider simulators standing in for the real ones.

use std::path::Path;

use botbox_sim::{Sim, SimConfig};

use crate::config::{Config, PluginSource};
use crate::triggers::webhooks::register::register_bbb;

/// The demo config, embedded so `botbox run --demo` works with no files
/// but the example plugins (built by `cargo xtask plugins`).
pub const CONFIG: &str = include_str!("../../../demo/botbox.toml");

/// Where the embedded config expects the example plugins, relative to the
/// current folder.
const PLUGINS: &str = "target/plugins";

/// The variable that says where the example plugins are when they are not
/// in `target/plugins`: `cargo xtask demo` sets it to where it built them
/// (under `CARGO_TARGET_DIR` when that is set).
pub const PLUGINS_VAR: &str = "BOTBOX_DEMO_PLUGINS";

/// The demo config with its simulators' providers; the simulators run as
/// long as the returned handle lives. Their state goes under
/// `target/demo-state` of the current folder. The plugins are read from
/// [`PLUGINS_VAR`] when it is set.
pub async fn config() -> anyhow::Result<(Config, Sim)> {
    let cwd = std::env::current_dir()?;
    let (sim, text) = start(&cwd.join("target/demo-state")).await?;
    let mut config = Config::parse(&text, Path::new("<embedded demo botbox.toml>"), &cwd)?;
    if let Some(dir) = std::env::var_os(PLUGINS_VAR).filter(|d| !d.is_empty()) {
        plugins_from(&mut config, &cwd, &cwd.join(dir));
    }
    Ok((config, sim))
}

/// Points the demo's plugins at `dir` instead of `target/plugins` of `cwd`.
fn plugins_from(config: &mut Config, cwd: &Path, dir: &Path) {
    let default = cwd.join(PLUGINS);
    for plugin in config.plugins.values_mut() {
        if let PluginSource::File(path) = &mut plugin.source
            && let Ok(name) = path.strip_prefix(&default)
        {
            *path = dir.join(name);
        }
    }
}

// Each simulator writes its own `[providers.*]` section and names its
// secret files; the demo only puts them together.
pub use botbox_sim::{provider_sections, write_secrets};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask demo` with `CARGO_TARGET_DIR` set builds the plugins
    /// elsewhere than `target/plugins`; the demo reads them from there.
    #[tokio::test]
    async fn the_demo_reads_its_plugins_from_the_folder_it_is_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path();
        let (_simulators, text) = start(&cwd.join("state")).await.expect("demo starts");
        let mut config = Config::parse(&text, Path::new("<demo>"), cwd).expect("demo config");
        assert!(!config.plugins.is_empty());
        plugins_from(&mut config, cwd, Path::new("/elsewhere/plugins"));
        for (name, plugin) in &config.plugins {
            let PluginSource::File(path) = &plugin.source else {
                panic!("{name}: not a file");
            };
            assert!(
                path.starts_with("/elsewhere/plugins")
                    && path.extension().is_some_and(|e| e == "wasm"),
                "{name}: {}",
                path.display()
            );
        }
    }
}
