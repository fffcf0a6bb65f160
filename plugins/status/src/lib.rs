//! status: `!status URL` answers `URL: 200 OK in 12 ms`, or why there is no
//! answer (`URL: refused by botbox: host not granted ...`).
//!
//! A botbox:bot@0.2.0 plugin: it reaches URLs through outbound HTTP
//! (`wasi:http`), which the host allows only to hosts the plugin asks for in
//! `describe()` *and* the operator grants under `plugins.status.http`. A
//! manifest is fixed when the plugin is built, so the hosts it may check are
//! listed in [`HOSTS`]: edit the list for your services; the operator's
//! grant narrows it further. Plain `http://` works only to a granted
//! loopback address with `http_plain_loopback = true` (a local service's
//! health page); everything else must be `https://`.
//!
//! Redirects are reported, not followed (`301 Moved Permanently`).

use botbox_sdk::http;
use botbox_sdk::{Bot, ChatMessage, Event, EventKind, Manifest, Message, settings};

/// The one channel it asks for.
pub const CHANNEL: &str = "lobby";

/// The hosts it asks to reach: public status pages, and loopback ports
/// 18080-18089 for services on the bot's own machine.
pub const HOSTS: &[&str] = &[
    "*.github.com",
    "www.githubstatus.com",
    "127.0.0.1:18080",
    "127.0.0.1:18081",
    "127.0.0.1:18082",
    "127.0.0.1:18083",
    "127.0.0.1:18084",
    "127.0.0.1:18085",
    "127.0.0.1:18086",
    "127.0.0.1:18087",
    "127.0.0.1:18088",
    "127.0.0.1:18089",
];

/// Longest URL echoed back; a longer one is cut.
pub const MAX_URL_CHARS: usize = 200;

/// The plugin.
pub struct Status;

impl Bot for Status {
    fn describe() -> Manifest {
        HOSTS.iter().fold(
            Manifest::new("status", env!("CARGO_PKG_VERSION"))
                .channel(CHANNEL)
                .event(EventKind::ChatMessage),
            |manifest, host| manifest.http(*host),
        )
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::ChatMessage(chat) = event else {
            return Ok(());
        };
        let prefix = settings::get_or("prefix", "!");
        let Some(url) = command_url(&chat.text, &prefix) else {
            return Ok(()); // not for us
        };
        let reply = if url.is_empty() {
            format!("usage: {prefix}status URL")
        } else {
            let shown = shown_url(url);
            match http::get(url) {
                Ok(response) => format!(
                    "{shown}: {} in {} ms",
                    status_line(response.status),
                    response.elapsed_ms
                ),
                Err(error) => format!("{shown}: {error}"),
            }
        };
        reply_to(&chat, reply).send()?;
        Ok(())
    }
}

botbox_sdk::export_bot!(Status);

/// The URL after `!status`, trimmed; `None` when the text is not the
/// command (`!statusx` is not it either).
pub fn command_url<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.trim().strip_prefix(prefix)?.strip_prefix("status")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    Some(rest.trim())
}

/// `200 OK`; a code without a standard phrase stays a number.
pub fn status_line(code: u16) -> String {
    match ::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{code} {reason}"),
        None => code.to_string(),
    }
}

/// The URL as echoed to the chat: users' text, so cut and with control
/// characters replaced.
pub fn shown_url(url: &str) -> String {
    let mut shown: String = url
        .chars()
        .take(MAX_URL_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if url.chars().count() > MAX_URL_CHARS {
        shown.push('…');
    }
    shown
}

fn reply_to(chat: &ChatMessage, text: String) -> Message {
    Message::text(chat.channel.clone(), text).reply_to(chat.conversation.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_status_command_is_answered() {
        assert_eq!(
            command_url("!status https://x.org/", "!"),
            Some("https://x.org/")
        );
        assert_eq!(command_url("  !status   ", "!"), Some(""));
        assert_eq!(command_url("!statusx", "!"), None);
        assert_eq!(command_url("status https://x.org", "!"), None);
        assert_eq!(command_url("/status u", "/"), Some("u"));
    }

    #[test]
    fn status_lines_carry_the_reason_phrase() {
        assert_eq!(status_line(200), "200 OK");
        assert_eq!(status_line(503), "503 Service Unavailable");
        assert_eq!(status_line(299), "299");
    }

    #[test]
    fn echoed_urls_are_cut_and_cleaned() {
        assert_eq!(shown_url("https://a/\u{1b}[31m"), "https://a/\u{fffd}[31m");
        let long = "h".repeat(MAX_URL_CHARS + 5);
        assert_eq!(shown_url(&long).chars().count(), MAX_URL_CHARS + 1);
    }

    #[test]
    fn it_asks_for_its_hosts_and_the_chat() {
        let manifest = Status::describe();
        assert_eq!(manifest.http.len(), HOSTS.len());
        assert_eq!(manifest.channels, [CHANNEL]);
        assert_eq!(manifest.events, [EventKind::ChatMessage]);
    }
}
