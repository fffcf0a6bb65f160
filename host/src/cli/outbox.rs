//! `botbox outbox`: look at the outbox, and retry or cancel a message.
//!
//! It opens the outbox file of the config's storage folder directly, so it
//! works whether or not the host is running (SQLite's WAL lets both in).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ExitCode;
use crate::config::Config;
use crate::delivery::store::{ListFilter, MessageState};
use crate::delivery::throttle::{Clock, SystemClock};
use crate::providers::console;
use crate::sanitize;

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// The config file whose storage folder holds the outbox.
    #[arg(long, short, default_value = "botbox.toml", global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub action: OutboxAction,
}

#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List messages, newest first.
    List {
        /// Only this state: queued, sending, delivered, partial, failed, cancelled.
        #[arg(long, value_parser = parse_state)]
        state: Option<MessageState>,
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Queue a failed, partial or cancelled message again.
    Retry { id: String },
    /// Cancel a queued message.
    Cancel { id: String },
}

fn parse_state(s: &str) -> Result<MessageState, String> {
    MessageState::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not a state; use queued, sending, delivered, partial, failed or cancelled"
        )
    })
}

pub async fn outbox(args: OutboxArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let location = crate::storage::Location::of(&config.storage);
    if let Some(path) = location.missing_file() {
        eprintln!(
            "error: no outbox at {} yet: nothing was ever sent with this config",
            path.display()
        );
        return Ok(2);
    }
    let store = crate::delivery::store::open(&config.storage, 1.0)?
        .stores
        .outbox;
    let now = SystemClock.now_ms();
    match args.action {
        OutboxAction::List {
            state,
            plugin,
            channel,
            limit,
        } => {
            let records = store.list(&ListFilter {
                state,
                plugin,
                channel,
                limit,
            })?;
            if records.is_empty() {
                println!("no messages");
            }
            for r in records {
                let age_s = now.saturating_sub(r.created_ms) / 1000;
                println!(
                    "{:<24} {:<9} {:>3} tries {:>6}s ago  {:<12} {}",
                    r.id,
                    r.state.as_str(),
                    r.attempts,
                    age_s,
                    sanitize::for_log(&r.plugin, 64),
                    console::render(&r.channel, &r.message),
                );
                if let Some(e) = &r.last_error {
                    println!("{:<24} last error: {}", "", sanitize::for_log(e, 300));
                }
            }
            Ok(0)
        }
        OutboxAction::Retry { id } => {
            if store.retry(&id, now)? {
                println!("{id}: queued again; a running host picks it up within a minute");
                Ok(0)
            } else {
                eprintln!("error: no failed, partial or cancelled message `{id}`");
                Ok(1)
            }
        }
        OutboxAction::Cancel { id } => {
            if store.cancel(&id, now)? {
                println!("{id}: cancelled");
                Ok(0)
            } else {
                eprintln!(
                    "error: no queued message `{id}` (it may be sending or already finished)"
                );
                Ok(1)
            }
        }
    }
}
