//! `botbox outbox`: look at the outbox, and retry or cancel a message.
//!
//! It opens the outbox file of the config's storage folder directly, so it
//! works whether or not the host is running (SQLite's WAL lets both in).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ExitCode;
use crate::config::Config;
use crate::delivery::store::{ListFilter, ListedMessage, MessageState};
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
    let store = crate::delivery::store::open(&config.storage, 1.0, None)?
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
            let listed = store.list_progress(&ListFilter {
                state,
                plugin,
                channel,
                limit,
            })?;
            if listed.is_empty() {
                println!("no messages");
            }
            for m in &listed {
                for line in listing_lines(m, now) {
                    println!("{line}");
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

/// `n` and `word`, plural unless `n` is one.
fn count(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// How `botbox outbox list` shows one message: a line with its delivery
/// attempts and requests, then one line per part with that part's
/// requests, and the last error. Every plugin- or provider-supplied word
/// is escaped.
fn listing_lines(m: &ListedMessage, now_ms: u64) -> Vec<String> {
    let r = &m.record;
    let age_s = now_ms.saturating_sub(r.created_ms) / 1000;
    let counts = format!(
        "{}, {}",
        count(m.attempts, "attempt"),
        count(m.requests(), "request")
    );
    let mut lines = vec![format!(
        "{:<24} {:<9} {:<22} {:>6}s ago  {:<12} {}",
        r.id,
        r.state.as_str(),
        counts,
        age_s,
        sanitize::for_log(&r.plugin, 64),
        console::render(&r.channel, &r.message),
    )];
    if let Some(owner) = &m.merged_into {
        lines.push(format!(
            "{:<24} sent inside the request of {}",
            "",
            sanitize::for_log(owner, 64)
        ));
    }
    let total = m.parts.len();
    for p in &m.parts {
        let to = if p.target.is_empty() {
            "the broadcast".to_string()
        } else {
            sanitize::for_log(&p.target, 80)
        };
        let error = match (&p.last_error, p.state) {
            (Some(e), crate::delivery::store::PartState::Failed) => {
                format!(": {}", sanitize::for_log(e, 200))
            }
            _ => String::new(),
        };
        lines.push(format!(
            "{:<24}   part {}/{total} {to}: {}, {}{error}",
            "",
            p.index + 1,
            p.state.as_str(),
            count(p.requests, "request"),
        ));
    }
    if let Some(e) = &r.last_error {
        lines.push(format!(
            "{:<24} last error: {}",
            "",
            sanitize::for_log(e, 300)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::store::{MessageState, OutboxRecord, PartProgress, PartState};
    use crate::wit::types::{Content, Message};

    fn listed(parts: Vec<PartProgress>, attempts: u32) -> ListedMessage {
        ListedMessage {
            record: OutboxRecord {
                id: "m1".into(),
                plugin: "announcer".into(),
                channel: "lobby".into(),
                endpoint: "bbb/sendChatMessage".into(),
                message: Message {
                    channel: "lobby".into(),
                    content: Content::Text("hi".into()),
                    sender: Some("Bot".into()),
                    extra: None,
                    idempotency_key: None,
                    reply_to: None,
                    options: None,
                },
                state: MessageState::Partial,
                created_ms: 1_000,
                next_attempt_ms: 1_000,
                attempts: 4,
                planned: true,
                last_error: Some("room-3: meetingNotFound".into()),
                finished_ms: Some(9_000),
                traceparent: None,
            },
            attempts,
            merged_into: None,
            parts,
        }
    }

    fn part(index: u32, target: &str, state: PartState, requests: u32) -> PartProgress {
        PartProgress {
            index,
            target: target.into(),
            state,
            requests,
            last_error: (state == PartState::Failed).then(|| "meetingNotFound: \x1b[2Jgone".into()),
        }
    }

    /// Attempts and requests are told apart, for the message and per part,
    /// and provider words are escaped.
    #[test]
    fn a_listing_shows_attempts_and_each_parts_requests() {
        let m = listed(
            vec![
                part(0, "room-1", PartState::Delivered, 1),
                part(1, "room-2", PartState::Delivered, 2),
                part(2, "room-3", PartState::Failed, 1),
            ],
            2,
        );
        let lines = listing_lines(&m, 61_000);
        assert_eq!(
            lines[0],
            format!(
                "{:<24} partial   2 attempts, 4 requests     60s ago  announcer    #lobby <Bot> hi",
                "m1"
            )
        );
        assert_eq!(lines[1].trim(), "part 1/3 room-1: delivered, 1 request");
        assert_eq!(lines[2].trim(), "part 2/3 room-2: delivered, 2 requests");
        assert_eq!(
            lines[3].trim(),
            "part 3/3 room-3: failed, 1 request: meetingNotFound: \\u{1b}[2Jgone"
        );
        assert_eq!(lines[4].trim(), "last error: room-3: meetingNotFound");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_broadcast_and_a_merged_message_say_so() {
        let m = listed(vec![part(0, "", PartState::Delivered, 1)], 1);
        let lines = listing_lines(&m, 1_000);
        assert!(lines[0].contains(" 1 attempt, 1 request "), "{lines:?}");
        assert_eq!(
            lines[1].trim(),
            "part 1/1 the broadcast: delivered, 1 request"
        );
        let mut merged = listed(vec![], 0);
        merged.merged_into = Some("m0".into());
        let lines = listing_lines(&merged, 1_000);
        assert!(lines[0].contains(" 0 attempts, 0 requests "), "{lines:?}");
        assert_eq!(lines[1].trim(), "sent inside the request of m0");
    }
}
