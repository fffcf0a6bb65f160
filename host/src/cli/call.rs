//! `botbox call`: one event into one plugin, printing every broadcast and
//! log line, with an exit code that says how it went.
//!
//! With `--config`, PLUGIN names a plugin of that config. Without one,
//! PLUGIN may be a `.wasm` file: the host asks it what it wants and grants
//! exactly that, with every channel printed to the console. This is the
//! plugin author's loop: build, then `botbox call my.wasm --event …`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::ExitCode;
use crate::app::supervisor::{Generation, Triggers};
use crate::app::{App, ad_hoc};
use crate::config::Config;
use crate::events::parse_event;

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
            match ad_hoc::config(&wasm, &args.settings, &args.storage).await {
                Ok(config) => (config, ad_hoc::PLUGIN.to_string()),
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
    let generation = Generation::start(Arc::new(app), Triggers::None);
    let called = generation.call(&plugin_name, &event, args.wait).await;
    generation.stop().await;
    printer.stop().await;
    for id in &called.still_queued {
        println!("queue {id}: still queued; `botbox run` will deliver it");
    }
    match called.result {
        Ok(()) => {
            println!(
                "ok    handled in {:.1} ms",
                called.elapsed.as_secs_f64() * 1000.0
            );
            Ok(0)
        }
        Err(e) => {
            println!("FAIL  {e}");
            Ok(1)
        }
    }
}
