//! `botbox call`: one event into one plugin, printing every broadcast and
//! log line, with an exit code that says how it went.
//!
//! With `--config`, PLUGIN names a plugin of that config. Without one,
//! PLUGIN may be a `.wasm` file: the host asks it what it wants and grants
//! exactly that, with every channel printed to the console. This is the
//! plugin author's loop: build, then `botbox call my.wasm --event …`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::ExitCode;
use crate::app::App;
use crate::config::Config;
use crate::events::{event_kind_name, parse_event};

#[derive(Debug, Args)]
pub struct CallArgs {
    /// A plugin name from the config, or a path to a .wasm component.
    pub plugin: String,
    /// The event: JSON text, a file holding it, or `-` for stdin.
    #[arg(long, short)]
    pub event: String,
    /// The config file. Without it, PLUGIN must be a .wasm file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A plugin setting, `key=value`, when PLUGIN is a .wasm file. Repeatable.
    #[arg(long = "setting", short = 's', value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Where kv data, the outbox and the compile cache live when PLUGIN is a .wasm file.
    #[arg(long, default_value = ".botbox")]
    pub storage: PathBuf,
    /// How long to wait for the broadcasts to be delivered, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_wait)]
    pub wait: std::time::Duration,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
}

fn read_event(arg: &str) -> anyhow::Result<String> {
    let trimmed = arg.trim_start();
    if trimmed.starts_with('{') {
        return Ok(arg.to_string());
    }
    if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(arg)
        .map_err(|e| anyhow::anyhow!("--event `{arg}` is neither JSON nor a readable file: {e}"))
}

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
        "[plugins.plugin]\npath = {}",
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
        writeln!(text, "[plugins.plugin.schedules]")?;
        for s in &m.schedules {
            writeln!(text, "{} = \"every 1d\"", toml_string(s))?;
        }
    }
    writeln!(text, "[plugins.plugin.settings]")?;
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
pub(crate) async fn ad_hoc(
    wasm: &Path,
    settings: &[String],
    storage: &Path,
) -> anyhow::Result<Config> {
    let probe = App::build(ad_hoc_config(wasm, settings, storage, None)?)?;
    let loaded = probe
        .runtime
        .load("plugin", &probe.config.plugins["plugin"])
        .await?;
    let manifest = loaded.context.manifest.clone();
    ad_hoc_config(wasm, settings, storage, manifest.as_ref())
}

pub async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let event_text = match read_event(&args.event) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let event = match parse_event(&event_text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let (config, plugin_name) = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => (c, args.plugin.clone()),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(2);
            }
        },
        None => {
            let wasm = PathBuf::from(&args.plugin);
            if !wasm.is_file() {
                eprintln!(
                    "error: `{}` is not a file; give a .wasm component, or --config with a plugin name",
                    args.plugin
                );
                return Ok(2);
            }
            match ad_hoc(&wasm, &args.settings, &args.storage).await {
                Ok(config) => (config, "plugin".to_string()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(2);
                }
            }
        }
    };
    let app = match App::build(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let Some(plugin_config) = app.config.plugins.get(&plugin_name) else {
        eprintln!(
            "error: no plugin `{plugin_name}` in {}; it has: {}",
            app.config.source.display(),
            app.config
                .plugins
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(2);
    };
    if let Err(e) = app.runtime.load(&plugin_name, plugin_config).await {
        eprintln!("error: {e}");
        return Ok(2);
    }

    let printer = super::output::Printer::start(&app);
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = app.delivery.start(stop.clone());
    let mut receipts = app.delivery.observers().accepted.subscribe();
    let started = Instant::now();
    let result = app.runtime.dispatch(&plugin_name, &event).await;
    let elapsed = started.elapsed();
    let mut ids = Vec::new();
    while let Ok(a) = receipts.try_recv() {
        ids.push(a.receipt.id);
    }
    let open = app.delivery.wait_for(&ids, args.wait).await;
    stop.cancel();
    workers.wait().await;
    printer.stop().await;
    for id in &open {
        println!("queue {id}: still queued; `botbox run` will deliver it");
    }
    match result {
        Ok(()) => {
            println!("ok    handled in {:.1} ms", elapsed.as_secs_f64() * 1000.0);
            Ok(0)
        }
        Err(e) => {
            println!("FAIL  {e}");
            Ok(1)
        }
    }
}
