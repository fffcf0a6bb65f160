//! `botbox check`: validate a config and load every plugin.

use std::path::PathBuf;

use clap::Args;

use super::ExitCode;
use crate::app::App;
use crate::capabilities::broadcast::content_kind_name;
use crate::events::event_kind_name;
use crate::wit::WIT_PACKAGE;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long, short, default_value = "botbox.toml")]
    pub config: PathBuf,
    /// Check the embedded demo config instead.
    #[arg(long, conflicts_with = "config")]
    pub demo: bool,
}

pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = if args.demo {
        crate::app::demo::config()
            .await
            .map(|(c, sim)| (c, Some(sim)))
    } else {
        super::load_config(Some(&args.config)).map(|c| (c, None))
    };
    let (config, _simulators) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let app = match App::build(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let errors = app.load_plugins().await;
    for name in app.runtime.plugin_names() {
        let Some(p) = app.runtime.plugin(&name) else {
            continue;
        };
        let grants = &p.context.grants;
        let manifest = p.context.manifest.as_ref();
        println!(
            "ok   plugin {name} ({} {})",
            manifest.map(|m| m.name.as_str()).unwrap_or("?"),
            manifest.map(|m| m.version.as_str()).unwrap_or("?"),
        );
        println!("       targets {WIT_PACKAGE}@{}", p.pre.version());
        for channel in &grants.channels {
            if let Some(c) = app.delivery.channel(channel) {
                // Replies that leave by another API than the channel's own
                // (Tencent's group and one-to-one messages, Easemob's).
                let replies = c.provider.reply_endpoints(&c.config);
                let replies = if replies.is_empty() {
                    String::new()
                } else {
                    format!("; replies via {}", replies.join(", "))
                };
                println!(
                    "       channel {channel} via {} ({}): {}{replies}",
                    c.provider_name,
                    c.provider.kind(),
                    c.rules
                        .accepts
                        .iter()
                        .map(|k| content_kind_name(*k))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        println!(
            "       events: {}",
            grants
                .events
                .iter()
                .map(|e| event_kind_name(*e))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !grants.http.is_empty() {
            println!(
                "       http: {}",
                grants
                    .http
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !grants.schedules.is_empty() {
            println!(
                "       schedules: {}",
                grants
                    .schedules
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for e in &errors {
        println!("FAIL {e}");
    }
    if errors.is_empty() {
        println!("config {} is valid", app.config.source.display());
        Ok(0)
    } else {
        println!("{} plugin(s) failed to load", errors.len());
        Ok(1)
    }
}
