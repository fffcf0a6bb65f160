//! A host for one bare `.wasm` component, as `botbox call my.wasm` and
//! `botbox dev` run it: the plugin is asked what it wants and granted
//! exactly that, with every channel on the console provider.

use std::fmt::Write as _;
use std::path::Path;

use super::{App, BuildOptions};
use crate::config::Config;
use crate::events::event_kind_name;
use crate::runtime::CompileSource;

/// The name the component's plugin has in the config.
pub const PLUGIN: &str = "plugin";

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A config for one `.wasm` file: first with no grants, to ask the plugin
/// what it wants; then granting exactly that, on console channels.
fn ad_hoc_config(
    wasm: &Path,
    settings: &[String],
    storage: &Path,
    wants: Option<&crate::wit::types::Manifest>,
) -> anyhow::Result<Config> {
    let mut text = String::new();
    writeln!(
        text,
        "[storage]\ndir = {}",
        toml_string(&storage.display().to_string())
    )?;
    writeln!(text, "[runtime]\nreload = false")?;
    writeln!(text, "[providers.console]\nkind = \"console\"")?;
    let channels: Vec<&String> = wants
        .map(|m| m.channels.iter().collect())
        .unwrap_or_default();
    for c in &channels {
        writeln!(
            text,
            "[channels.{}]\nprovider = \"console\"",
            toml_string(c)
        )?;
    }
    writeln!(
        text,
        "[plugins.{PLUGIN}]\npath = {}",
        toml_string(&wasm.display().to_string())
    )?;
    let list = |items: Vec<String>| {
        items
            .iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        text,
        "channels = [{}]",
        list(channels.iter().map(|s| s.to_string()).collect())
    )?;
    if let Some(m) = wants {
        let events = m
            .events
            .iter()
            .map(|e| event_kind_name(*e).to_string())
            .collect();
        writeln!(text, "events = [{}]", list(events))?;
        writeln!(text, "[plugins.{PLUGIN}.schedules]")?;
        for s in &m.schedules {
            writeln!(text, "{} = \"every 1d\"", toml_string(s))?;
        }
    }
    writeln!(text, "[plugins.{PLUGIN}.settings]")?;
    for s in settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--setting `{s}` must look like key=value"))?;
        writeln!(text, "{} = {}", toml_string(k), toml_string(v))?;
    }
    let cwd = std::env::current_dir()?;
    Ok(Config::parse(&text, Path::new("<botbox call>"), &cwd)?)
}

/// The config for a bare `.wasm` file: the plugin is asked what it wants
/// (with no grants), then granted exactly that on console channels.
pub async fn config(wasm: &Path, settings: &[String], storage: &Path) -> anyhow::Result<Config> {
    Ok(
        config_with(wasm, settings, storage, BuildOptions::default())
            .await?
            .0,
    )
}

/// [`config`], asking the plugin with a host built with `options` (`botbox
/// dev` passes its incremental compile cache). Also says how the asked
/// plugin was compiled: this is the compile; the host of the returned
/// config then loads the component from the compile cache.
pub async fn config_with(
    wasm: &Path,
    settings: &[String],
    storage: &Path,
    options: BuildOptions,
) -> anyhow::Result<(Config, CompileSource)> {
    let probe = App::build_with(ad_hoc_config(wasm, settings, storage, None)?, options)?;
    let loaded = probe
        .runtime
        .load(PLUGIN, &probe.config.plugins[PLUGIN])
        .await?;
    let manifest = loaded.context.manifest.clone();
    Ok((
        ad_hoc_config(wasm, settings, storage, manifest.as_ref())?,
        loaded.compile_source,
    ))
}
