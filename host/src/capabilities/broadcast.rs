//! The `broadcast` import and its policy: grant check, then the channel's
//! provider rules, then the plugin's budget, then the delivery engine.
//!
//! Every size is bounded here, before a message is persisted or printed, so
//! a hostile plugin cannot push unbounded data further into the host.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::Linker;

use super::rate::TokenBucket;
use super::{Capability, Ctx, HasCapability, Setup, View};
use crate::config::PluginLimits;
use crate::delivery::{Channel, Delivery};
use crate::wit::botbox::bot::broadcast::{self, Host};
use crate::wit::types::{
    BroadcastError, ChannelInfo, Content, ContentKind, Event, Media, Message, MessageOptions,
};
use crate::wit::v0_2::botbox::bot::broadcast as v0_2;

/// The `broadcast` capability.
pub struct Broadcast;

/// What every store of one plugin shares for `broadcast`.
#[derive(Clone)]
pub struct BroadcastSlice {
    /// Where accepted messages go; the channels and their rules.
    pub delivery: Arc<Delivery>,
    /// Sends per minute (`limits.broadcasts_per_minute`); kept across a
    /// reload with the same limits.
    pub budget: Arc<Mutex<TokenBucket>>,
    /// The conversations it may `reply-to`; kept across reloads.
    pub conversations: Arc<Mutex<Conversations>>,
}

impl BroadcastSlice {
    /// A full budget for these limits.
    pub fn budget(limits: &PluginLimits) -> TokenBucket {
        TokenBucket::new(
            limits.broadcasts_per_minute,
            limits.broadcasts_per_minute as f64 / 60.0,
        )
    }
}

impl Capability for Broadcast {
    type Slice = BroadcastSlice;

    fn slice(setup: &Setup<'_>, previous: Option<&BroadcastSlice>) -> BroadcastSlice {
        let kept = previous.filter(|_| setup.same_limits);
        BroadcastSlice {
            delivery: setup.services.delivery.clone(),
            budget: kept.map(|p| p.budget.clone()).unwrap_or_else(|| {
                Arc::new(Mutex::new(BroadcastSlice::budget(&setup.config.limits)))
            }),
            conversations: previous
                .map(|p| p.conversations.clone())
                .unwrap_or_default(),
        }
    }

    fn add_to_linker<T: View<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        broadcast::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)?;
        v0_2::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)
    }

    /// A plugin told about a conversation (a chat message, a meeting) may
    /// answer in it.
    #[inline]
    fn before_event(slice: &BroadcastSlice, event: &Event) {
        let (channel, conversation) = match event {
            Event::ChatMessage(m) => (&m.channel, &m.conversation),
            Event::Meeting(m) => (&m.channel, &m.meeting_id),
            _ => return,
        };
        if let Ok(mut c) = slice.conversations.lock() {
            c.remember(channel, conversation);
        }
    }
}

/// Conversations a plugin has been told about (in chat-message and meeting
/// events), the only ones it may `reply-to`. Bounded: the oldest half is
/// forgotten when full.
#[derive(Debug, Default)]
pub struct Conversations {
    seen: HashSet<(String, String)>,
    order: Vec<(String, String)>,
}

impl Conversations {
    const MAX: usize = 10_000;

    /// Notes that the plugin was told about `conversation` on `channel`.
    pub fn remember(&mut self, channel: &str, conversation: &str) {
        let key = (channel.to_string(), conversation.to_string());
        if self.seen.insert(key.clone()) {
            self.order.push(key);
            if self.order.len() > Self::MAX {
                for old in self.order.drain(..Self::MAX / 2) {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Whether the plugin was told about `conversation` on `channel`.
    pub fn contains(&self, channel: &str, conversation: &str) -> bool {
        self.seen
            .contains(&(channel.to_string(), conversation.to_string()))
    }
}

// Bounds that hold on every channel, whatever the provider.

/// The most bytes of `extra` (a JSON object).
pub const MAX_EXTRA_BYTES: usize = 64 << 10;
/// The most bytes of an `idempotency-key`.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// The most bytes of a media or thumbnail url.
pub const MAX_URL_BYTES: usize = 4096;
/// The most bytes of a short field: file name, format, custom event name,
/// command action, location address.
pub const MAX_SHORT_FIELD_BYTES: usize = 1024;
/// The most bytes of each JSON option (`attach`, `keyboard`, `menu`).
pub const MAX_OPTION_JSON_BYTES: usize = 30 * 1024;
/// The most bytes of custom content's data.
pub const MAX_CUSTOM_DATA_BYTES: usize = 64 << 10;
/// The most bytes of a `reply-to` conversation.
pub const MAX_CONVERSATION_BYTES: usize = 256;

/// The kind of a message's content, as channels list what they accept.
pub fn content_kind(content: &Content) -> ContentKind {
    match content {
        Content::Text(_) => ContentKind::Text,
        Content::Custom(_) => ContentKind::Custom,
        Content::Command(_) => ContentKind::Command,
        Content::Image(_) => ContentKind::Image,
        Content::File(_) => ContentKind::File,
        Content::Audio(_) => ContentKind::Audio,
        Content::Video(_) => ContentKind::Video,
        Content::Location(_) => ContentKind::Location,
    }
}

/// A content kind's name in the WIT, for messages and the CLI.
pub fn content_kind_name(kind: ContentKind) -> &'static str {
    match kind {
        ContentKind::Text => "text",
        ContentKind::Custom => "custom",
        ContentKind::Command => "command",
        ContentKind::Image => "image",
        ContentKind::File => "file",
        ContentKind::Audio => "audio",
        ContentKind::Video => "video",
        ContentKind::Location => "location",
    }
}

fn invalid(msg: impl Into<String>) -> BroadcastError {
    BroadcastError::Invalid(msg.into())
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), BroadcastError> {
    if value.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

fn check_json_object(field: &str, value: &str, max: usize) -> Result<(), BroadcastError> {
    check_len(field, value, max)?;
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(invalid(format!("{field} must be a JSON object"))),
        Err(e) => Err(invalid(format!("{field} is not valid JSON: {e}"))),
    }
}

fn check_media(kind: &str, m: &Media) -> Result<(), BroadcastError> {
    if m.url.is_empty() {
        return Err(invalid(format!("{kind} needs a url")));
    }
    check_len(&format!("{kind} url"), &m.url, MAX_URL_BYTES)?;
    if let Some(t) = &m.thumbnail_url {
        check_len(&format!("{kind} thumbnail-url"), t, MAX_URL_BYTES)?;
    }
    for (field, value) in [
        ("filename", &m.filename),
        ("share-secret", &m.share_secret),
        ("format", &m.format),
        ("thumbnail-share-secret", &m.thumbnail_share_secret),
    ] {
        if let Some(v) = value {
            check_len(&format!("{kind} {field}"), v, MAX_SHORT_FIELD_BYTES)?;
        }
    }
    Ok(())
}

fn check_options(o: &MessageOptions) -> Result<(), BroadcastError> {
    for (field, value) in [
        ("attach", &o.attach),
        ("keyboard", &o.keyboard),
        ("menu", &o.menu),
    ] {
        if let Some(v) = value {
            check_len(field, v, MAX_OPTION_JSON_BYTES)?;
            if serde_json::from_str::<serde_json::Value>(v).is_err() {
                return Err(invalid(format!("{field} is not valid JSON")));
            }
        }
    }
    Ok(())
}

/// The checks every channel shares: sizes, JSON shape, content kind, text
/// length. Provider-specific rules follow in `Provider::validate`.
pub fn check_message(channel: &Channel, message: &Message) -> Result<(), BroadcastError> {
    let rules = &channel.rules;
    let kind = content_kind(&message.content);
    if !rules.accepts.contains(&kind) {
        return Err(BroadcastError::Unsupported(format!(
            "channel `{}` ({}) cannot carry {} content; it accepts: {}",
            channel.name,
            channel.provider.kind(),
            content_kind_name(kind),
            rules
                .accepts
                .iter()
                .map(|k| content_kind_name(*k))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    match &message.content {
        Content::Text(text) => {
            let chars = text.chars().count();
            if chars == 0 || text.trim().is_empty() {
                return Err(invalid("text is empty"));
            }
            let max = if rules.splits_long_text {
                rules.max_text_chars as usize * rules.max_split_parts as usize
            } else {
                rules.max_text_chars as usize
            };
            if chars > max {
                return Err(invalid(format!(
                    "text is {chars} characters; channel `{}` takes at most {max}",
                    channel.name
                )));
            }
        }
        Content::Custom(c) => {
            check_len("custom event", &c.event, MAX_SHORT_FIELD_BYTES)?;
            check_len("custom data", &c.data, MAX_CUSTOM_DATA_BYTES)?;
        }
        Content::Command(action) => {
            if action.is_empty() {
                return Err(invalid("command action is empty"));
            }
            check_len("command action", action, MAX_SHORT_FIELD_BYTES)?;
        }
        Content::Image(m) => check_media("image", m)?,
        Content::File(m) => check_media("file", m)?,
        Content::Audio(m) => check_media("audio", m)?,
        Content::Video(m) => check_media("video", m)?,
        Content::Location(l) => {
            if !(-90.0..=90.0).contains(&l.latitude) || !(-180.0..=180.0).contains(&l.longitude) {
                return Err(invalid(
                    "location is outside -90..90 latitude or -180..180 longitude",
                ));
            }
            if let Some(a) = &l.address {
                check_len("location address", a, MAX_SHORT_FIELD_BYTES)?;
            }
        }
    }
    if let Some(sender) = &message.sender {
        if sender.is_empty() {
            return Err(invalid(
                "sender is empty; leave it out to use the channel's default",
            ));
        }
        let chars = sender.chars().count();
        if chars > rules.max_sender_chars as usize {
            return Err(invalid(format!(
                "sender is {chars} characters; the limit is {}",
                rules.max_sender_chars
            )));
        }
    }
    if let Some(extra) = &message.extra {
        check_json_object("extra", extra, MAX_EXTRA_BYTES)?;
    }
    if let Some(key) = &message.idempotency_key {
        if key.is_empty() {
            return Err(invalid("idempotency-key is empty"));
        }
        check_len("idempotency-key", key, MAX_IDEMPOTENCY_KEY_BYTES)?;
    }
    if let Some(conversation) = &message.reply_to {
        check_len("reply-to", conversation, MAX_CONVERSATION_BYTES)?;
    }
    if let Some(options) = &message.options {
        check_options(options)?;
    }
    Ok(())
}

impl Ctx<'_, BroadcastSlice> {
    /// Everything `send-broadcast` checks before the outbox: grants, the
    /// channel's rules, the plugin's budget. Returns the channel.
    fn admit(&mut self, message: &Message) -> Result<Arc<Channel>, BroadcastError> {
        let plugin = self.plugin;
        let slice = self.slice;
        let name = &message.channel;
        if !plugin.grants.channels.contains(name) {
            let asked = plugin
                .manifest
                .as_ref()
                .is_some_and(|m| m.channels.iter().any(|c| c == name));
            // A plugin learns nothing about channels it never asked for.
            return Err(if asked {
                BroadcastError::NotGranted(format!(
                    "channel `{name}` is not granted to plugin `{}`; the operator can add it to plugins.{}.channels",
                    plugin.name, plugin.name
                ))
            } else {
                BroadcastError::UnknownChannel(format!(
                    "plugin `{}` did not ask for channel `{}` in describe()",
                    plugin.name,
                    crate::sanitize::for_log(name, 64)
                ))
            });
        }
        let Some(channel) = slice.delivery.channel(name) else {
            return Err(BroadcastError::UnknownChannel(format!(
                "channel `{name}` is not configured"
            )));
        };
        check_message(&channel, message)?;
        if let Some(conversation) = &message.reply_to {
            let known = slice
                .conversations
                .lock()
                .map(|c| c.contains(name, conversation))
                .unwrap_or(false);
            if !known {
                return Err(BroadcastError::NotGranted(format!(
                    "reply-to names a conversation of channel `{name}` this plugin was never told about"
                )));
            }
        }
        channel.provider.validate(&channel.config, message)?;
        let budget = slice
            .budget
            .lock()
            .map_err(|_| BroadcastError::Internal("broadcast budget unavailable".into()))?
            .take(Instant::now());
        if let Err(wait) = budget {
            return Err(BroadcastError::QuotaExhausted(
                wait.as_millis().min(u64::MAX as u128) as u64,
            ));
        }
        Ok(channel)
    }

    async fn send(
        &mut self,
        message: Message,
    ) -> Result<crate::wit::types::Receipt, BroadcastError> {
        let channel = self.admit(&message)?;
        // The outbox write leaves the tokio worker (a database that hangs
        // must not stall the runtime) and must answer before the plugin's
        // own deadline, so the plugin hears `internal` rather than being
        // killed.
        let left = self
            .plugin
            .limits
            .deadline
            .saturating_sub(self.started.elapsed());
        let deadline = Instant::now() + left.mul_f64(0.9);
        let delivery = self.slice.delivery.clone();
        let name = self.plugin.name.clone();
        let channel_name = channel.name.clone();
        // The blocking thread does not inherit the span; the outbox row
        // keeps the trace it is entered in.
        let span = tracing::Span::current();
        let accept = tokio::task::spawn_blocking(move || {
            let _in_trace = span.enter();
            crate::delivery::store::postgres::with_deadline(deadline, || {
                delivery.accept(&name, &channel, message)
            })
        });
        // While the write waits for its commit (an fsync, shared with the
        // accepts that gathered meanwhile: delivery/store/batch.rs) this
        // call runs no guest code, so its CPU turn goes to another call:
        // concurrent broadcasts then share a commit instead of one turn's
        // worth of them at a time. The turn comes back, in the rotation,
        // before the guest goes on.
        let answer = match super::off_turn(self.turn, accept).await {
            Ok(answer) => answer,
            Err(e) => Err(BroadcastError::Internal(format!(
                "the message was not accepted: the outbox write failed ({e})"
            ))),
        };
        // The detail of an outbox failure (server, port, database) is for
        // the operator's log; the plugin hears a generic reason.
        answer.map_err(|e| for_guest(&self.plugin.name, &channel_name, e))
    }
}

/// What the guest may hear of an `accept` failure. The host's own trouble
/// (`internal`: an unreachable PostgreSQL, with its host, port, database
/// and user) is infrastructure the plugin has no business knowing: it goes
/// to the operator's log, and the plugin gets a generic reason.
fn for_guest(plugin: &str, channel: &str, error: BroadcastError) -> BroadcastError {
    match error {
        BroadcastError::Internal(detail) => {
            tracing::error!(
                plugin = %plugin,
                channel = %crate::sanitize::for_log(channel, 64),
                "send-broadcast was refused: {}",
                crate::sanitize::for_log(&detail, 2000)
            );
            BroadcastError::Internal(GUEST_INTERNAL.into())
        }
        other => other,
    }
}

/// The reason a plugin gets when the host could not take its message.
pub const GUEST_INTERNAL: &str =
    "the outbox could not store the message; the operator's log has the details";

/// `botbox:bot/broadcast@0.2.0`: the same types and the same code as 0.1.0.
impl v0_2::Host for Ctx<'_, BroadcastSlice> {
    async fn send_broadcast(
        &mut self,
        msg: Message,
    ) -> wasmtime::Result<Result<crate::wit::types::Receipt, BroadcastError>> {
        Host::send_broadcast(self, msg).await
    }

    async fn channels(&mut self) -> wasmtime::Result<Vec<ChannelInfo>> {
        Host::channels(self).await
    }
}

impl Host for Ctx<'_, BroadcastSlice> {
    async fn send_broadcast(
        &mut self,
        msg: Message,
    ) -> wasmtime::Result<Result<crate::wit::types::Receipt, BroadcastError>> {
        let span = tracing::debug_span!(
            "send-broadcast",
            plugin = %self.plugin.name,
            channel = %crate::sanitize::for_log(&msg.channel, 64),
        );
        // The channel is copied only when someone collects (the admin API):
        // this is on the path of every broadcast.
        let collected = SentLog::active().then(|| crate::sanitize::for_log(&msg.channel, 64));
        let outcome = tracing::Instrument::instrument(self.send(msg), span).await;
        if let Some(channel) = collected {
            SentLog::record(channel, &outcome);
        }
        Ok(outcome)
    }

    async fn channels(&mut self) -> wasmtime::Result<Vec<ChannelInfo>> {
        Ok(self
            .plugin
            .grants
            .channels
            .iter()
            .filter_map(|name| self.slice.delivery.channel(name))
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                provider_kind: c.provider.kind().to_string(),
                accepts: c.rules.accepts.clone(),
                max_text_chars: c.rules.max_text_chars,
                splits_long_text: c.rules.splits_long_text,
            })
            .collect())
    }
}

/// One `send-broadcast` of a call, as a caller that collects them
/// ([`SentLog::collect`]) sees it: what the plugin was answered.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The channel the plugin named (escaped and cut).
    pub channel: String,
    /// The receipt, or why the message was refused (as the plugin heard it).
    pub outcome: Result<crate::wit::types::Receipt, BroadcastError>,
}

/// The broadcasts of the calls made inside one [`SentLog::collect`]. A
/// task-local rather than an argument: the call crosses the runtime, the
/// guest pool and the store to reach `send-broadcast`, and only the admin
/// API wants the answer; the runtime carries the log onto the guest's task
/// ([`SentLog::current`], [`SentLog::scope`]).
#[derive(Clone, Default)]
pub struct SentLog(Arc<Mutex<Vec<Sent>>>);

tokio::task_local! {
    static SENT: SentLog;
}

/// Broadcasts kept per collect; the plugin's budget bounds them well below.
const MAX_SENT: usize = 1000;

impl SentLog {
    /// Runs `work`, collecting every broadcast of the calls it makes.
    pub async fn collect<F: std::future::Future>(work: F) -> (F::Output, Vec<Sent>) {
        let log = SentLog::default();
        let out = SENT.scope(log.clone(), work).await;
        let sent = std::mem::take(&mut *log.0.lock().unwrap_or_else(|p| p.into_inner()));
        (out, sent)
    }

    /// The log of the collect this task runs in, if any.
    pub fn current() -> Option<SentLog> {
        SENT.try_with(Clone::clone).ok()
    }

    /// `work`, recording into this log wherever it runs (the guest pool
    /// runs calls as tasks of their own).
    pub fn scope<F: std::future::Future>(
        self,
        work: F,
    ) -> tokio::task::futures::TaskLocalFuture<SentLog, F> {
        SENT.scope(self, work)
    }

    fn active() -> bool {
        SENT.try_with(|_| ()).is_ok()
    }

    fn record(channel: String, outcome: &Result<crate::wit::types::Receipt, BroadcastError>) {
        let _ = SENT.try_with(|log| {
            let mut sent = log.0.lock().unwrap_or_else(|p| p.into_inner());
            if sent.len() < MAX_SENT {
                sent.push(Sent {
                    channel,
                    outcome: outcome.clone(),
                });
            }
        });
    }
}
