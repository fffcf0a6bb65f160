//! The `console` provider: prints each message as one readable line on
//! stdout. It needs no account, which makes it the demo's and the plugin
//! author's default.

use std::io::Write;

use async_trait::async_trait;

use super::{ALL_CONTENT_KINDS, ChannelRules, DeliveryOutcome, Part, Provider, unknown_keys};
use crate::config::{ChannelConfig, ConfigIssue};
use crate::sanitize;
use crate::wit::types::{BroadcastError, Content, Message};

/// The `console` kind's registration.
pub const KIND: super::Kind = super::Kind {
    name: "console",
    build: |key, options, _context| Ok(std::sync::Arc::new(Console::from_options(key, options)?)),
    inbound: None,
};

/// The console: messages as lines on stdout.
pub struct Console {
    max_text_chars: u32,
}

impl Console {
    /// Builds the provider from its `[providers.NAME]` options (`key` is
    /// `providers.NAME`), reporting every problem with its key.
    pub fn from_options(key: &str, options: &toml::Table) -> Result<Console, Vec<ConfigIssue>> {
        let mut issues = unknown_keys(
            options,
            &["max_text_chars", super::limits::THROTTLE_KEY],
            key,
        );
        let max_text_chars = match options.get("max_text_chars") {
            None => 4000,
            Some(toml::Value::Integer(n)) if (1..=1_000_000).contains(n) => *n as u32,
            Some(_) => {
                issues.push(ConfigIssue {
                    key: format!("{key}.max_text_chars"),
                    message: "must be an integer from 1 to 1000000".into(),
                });
                4000
            }
        };
        if issues.is_empty() {
            Ok(Console { max_text_chars })
        } else {
            Err(issues)
        }
    }
}

/// A message's content as one line of text, unescaped: the text itself,
/// or a `[kind]` tag and what the kind carries. The console prints it and
/// `botbox test` matches expectations against it.
pub fn content_line(content: &Content) -> String {
    match content {
        Content::Text(t) => t.clone(),
        Content::Custom(c) => format!("[custom {}] {}", c.event, c.data),
        Content::Command(a) => format!("[command] {a}"),
        Content::Image(m) => format!("[image] {}", m.url),
        Content::File(m) => format!("[file] {}", m.url),
        Content::Audio(m) => format!("[audio] {}", m.url),
        Content::Video(m) => format!("[video] {}", m.url),
        Content::Location(l) => format!(
            "[location] {:.5},{:.5} {}",
            l.latitude,
            l.longitude,
            l.address.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
    }
}

/// One line per message: channel, sender and a readable rendering of the content.
pub fn render(channel: &str, message: &Message) -> String {
    let sender = message.sender.as_deref().unwrap_or("bot");
    let body = content_line(&message.content);
    let to = match &message.reply_to {
        Some(conversation) => format!("{channel}/{conversation}"),
        None => channel.to_string(),
    };
    format!(
        "#{} <{}> {}",
        sanitize::for_log(&to, 200),
        sanitize::for_log(sender, 255),
        sanitize::for_log(&body, 4000)
    )
}

#[async_trait]
impl Provider for Console {
    fn kind(&self) -> &'static str {
        "console"
    }

    fn check_channel(&self, name: &str, channel: &ChannelConfig) -> Vec<ConfigIssue> {
        let mut issues = unknown_keys(&channel.options, &[], &format!("channels.{name}"));
        if channel.target.is_some() {
            issues.push(ConfigIssue {
                key: format!("channels.{name}.target"),
                message: "a console channel has no target; remove it".into(),
            });
        }
        issues
    }

    fn default_throttle(&self, _endpoint: &str) -> crate::providers::limits::ThrottleSpec {
        crate::providers::limits::ThrottleSpec::default()
    }

    fn rules(&self, _channel: &ChannelConfig) -> ChannelRules {
        ChannelRules {
            accepts: ALL_CONTENT_KINDS.to_vec(),
            max_text_chars: self.max_text_chars,
            splits_long_text: false,
            max_split_parts: 1,
            max_sender_chars: 255,
        }
    }

    fn validate(&self, _channel: &ChannelConfig, _message: &Message) -> Result<(), BroadcastError> {
        Ok(())
    }

    async fn plan(
        &self,
        _channel_name: &str,
        _channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome> {
        Ok(vec![Part {
            target: String::new(),
            message: message.clone(),
            dedup_key: None,
            merged: Vec::new(),
        }])
    }

    async fn send(&self, _channel: &ChannelConfig, part: &Part) -> DeliveryOutcome {
        let line = render(&part.message.channel, &part.message);
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{line}") {
            Ok(()) => DeliveryOutcome::Delivered {
                provider_ids: vec![],
            },
            Err(e) => DeliveryOutcome::RetryLater {
                after: None,
                reason: format!("cannot write to stdout: {e}"),
            },
        }
    }
}
