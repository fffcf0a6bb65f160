//! `botbox webhooks register`: tells BigBlueButton where to send callbacks.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ExitCode;
use crate::config::Config;
use crate::triggers::webhooks::WebhookSettings;
use crate::triggers::webhooks::register::{Registered, register_bbb};

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub action: WebhooksAction,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Register each BigBlueButton provider's `inbound.url` with a signed
    /// `hooks/create` (the other providers take theirs in their consoles).
    Register {
        /// The config file.
        #[arg(long, short, default_value = "botbox.toml")]
        config: PathBuf,
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Only this meeting's events (default: every meeting).
        #[arg(long)]
        meeting: Option<String>,
    },
}

pub async fn webhooks(args: WebhooksArgs) -> anyhow::Result<ExitCode> {
    let WebhooksAction::Register {
        config,
        provider,
        meeting,
    } = args.action;
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let settings = match WebhookSettings::from_config(&config) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("error: the config has no [webhooks] section");
            return Ok(2);
        }
        Err(issues) => {
            for i in issues {
                eprintln!("error: {i}");
            }
            return Ok(2);
        }
    };
    let names: Vec<String> = settings
        .providers
        .iter()
        .filter(|(name, hook)| {
            hook.kind == crate::providers::bigbluebutton::KIND.name
                && provider.as_ref().is_none_or(|p| p == *name)
        })
        .map(|(name, _)| name.clone())
        .collect();
    if names.is_empty() {
        eprintln!("error: no bigbluebutton provider with an [inbound] section to register");
        return Ok(2);
    }
    let mut failed = false;
    for name in names {
        let url = &settings.providers[&name].url;
        match register_bbb(&config, &name, meeting.as_deref()).await {
            Ok(Registered::Created(id)) => println!("{name}: registered {url} (hook {id})"),
            Ok(Registered::AlreadyThere(id)) => {
                println!("{name}: {url} was already registered (hook {id})")
            }
            Err(e) => {
                eprintln!("error: {name}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}
