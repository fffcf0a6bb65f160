//! Inbound provider callbacks: an HTTP listener that authenticates each
//! call exactly as its provider signs it, refuses forged, stale and
//! replayed calls, turns what it says into WIT events and hands each to the
//! plugins granted that event kind on that channel.
//!
//! ```toml
//! [webhooks]
//! listen = "127.0.0.1:8080"        # POST /webhooks/{provider name}
//! max_body_kb = 64                 # larger bodies: 413
//! max_skew_s = 60                  # Tencent, Easemob, Bitrix24 time checks
//!
//! [providers.campus-bbb.inbound]
//! secret = { env = "BBB_WEBHOOK_SECRET" }
//! url = "https://bot.example.edu/webhooks/campus-bbb"   # BBB only: as registered
//! ```
//!
//! Status codes: 200 accepted (also for events no plugin wants), 400
//! malformed, 401 forged or missing credentials, 403 stale, 404 no such
//! provider (or it has no `inbound` section), 409 replay (a call already
//! handled), 413 body too large. A refusal is logged with the provider,
//! the status and the reason, never with a credential or a signature.
//!
//! Routing: an event from provider account P goes to the channels whose
//! `provider = "P"`. Each plugin gets it at most once, on the first of its
//! granted channels of P (by name), and only when it is granted the event
//! kind (`chat-message` or `meeting`).

mod bigbluebutton;
mod bitrix24;
mod easemob;
pub mod register;
mod tencent;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigIssue, Secret, take_secret};
use crate::providers::unknown_keys;
use crate::runtime::{Runtime, event_kind};
use crate::sanitize;
use crate::triggers::metrics::Metrics;
use crate::wit::types::{ChatMessage, Event, MeetingEvent, MeetingEventKind};

/// Default largest accepted body.
pub const DEFAULT_MAX_BODY_KB: u64 = 64;
/// Default tolerance of the time checks (the Tencent documentation's 60 s).
pub const DEFAULT_MAX_SKEW_S: u64 = 60;
/// How long a handled call's id is remembered, and how many are. Calls
/// older than this are refused as stale (`max_skew_s` is at most this), so
/// within the capacity a replay is always recognised.
pub(crate) const REPLAY_TTL: Duration = Duration::from_secs(3600);
const REPLAY_CAPACITY: usize = 100_000;
/// Longest text, id and name taken from a callback (characters).
const MAX_TEXT_CHARS: usize = 16_000;
const MAX_ID_CHARS: usize = 256;

/// Which provider protocol a webhook speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    BigBlueButton,
    Tencent,
    Easemob,
    Bitrix24,
}

impl HookKind {
    fn from_provider_kind(kind: &str) -> Option<HookKind> {
        match kind {
            "bigbluebutton" => Some(HookKind::BigBlueButton),
            "tencent" => Some(HookKind::Tencent),
            "easemob" => Some(HookKind::Easemob),
            "bitrix24" => Some(HookKind::Bitrix24),
            _ => None,
        }
    }
}

/// One provider account's inbound authentication.
#[derive(Debug, Clone)]
pub struct ProviderHook {
    pub kind: HookKind,
    /// BBB: the bbb-webhooks shared secret (checksum or Bearer); Tencent:
    /// the callback token; Easemob: the callback secret; Bitrix24: the
    /// application token.
    pub secret: Secret,
    /// BBB only: the callback URL exactly as registered with `hooks/create`;
    /// the checksum covers it.
    pub url: String,
    /// The account a call must name when it names one: Tencent's
    /// `SdkAppid`, Easemob's `appkey` (`org#app`), from the provider's own
    /// options.
    pub account: Option<String>,
}

/// The validated `[webhooks]` section and every `[providers.*.inbound]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_skew: Duration,
    pub providers: BTreeMap<String, ProviderHook>,
}

impl WebhookSettings {
    /// `None` when the config has no `[webhooks]` section. Every problem is
    /// reported, with its key.
    pub fn from_config(config: &Config) -> Result<Option<WebhookSettings>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let Some(table) = &config.webhooks else {
            for (name, p) in &config.providers {
                if p.inbound.is_some() {
                    issues.push(ConfigIssue {
                        key: format!("providers.{name}.inbound"),
                        message: "is set, but there is no [webhooks] section with `listen` to receive the callbacks".into(),
                    });
                }
            }
            return if issues.is_empty() {
                Ok(None)
            } else {
                Err(issues)
            };
        };
        issues.extend(unknown_keys(
            table,
            &["listen", "max_body_kb", "max_skew_s"],
            "webhooks",
        ));
        let listen = parse_listen(table.get("listen"), "webhooks.listen", &mut issues);
        let max_body_kb = int_in(
            table.get("max_body_kb"),
            "webhooks.max_body_kb",
            1,
            4096,
            DEFAULT_MAX_BODY_KB,
            &mut issues,
        );
        let max_skew_s = int_in(
            table.get("max_skew_s"),
            "webhooks.max_skew_s",
            1,
            3600,
            DEFAULT_MAX_SKEW_S,
            &mut issues,
        );
        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            let Some(value) = &p.inbound else { continue };
            let key = format!("providers.{name}.inbound");
            let Some(kind) = HookKind::from_provider_kind(&p.kind) else {
                issues.push(ConfigIssue {
                    key,
                    message: format!(
                        "provider kind `{}` sends no callbacks; `inbound` exists for bigbluebutton, tencent, easemob and bitrix24",
                        p.kind
                    ),
                });
                continue;
            };
            let Some(hook) = value.as_table() else {
                issues.push(ConfigIssue {
                    key,
                    message: "must be a table: { secret = { env = \"VAR\" } }".into(),
                });
                continue;
            };
            let known: &[&str] = if kind == HookKind::BigBlueButton {
                &["secret", "url"]
            } else {
                &["secret"]
            };
            issues.extend(unknown_keys(hook, known, &key));
            let secret = match take_secret(hook, "secret", &key, &config.base_dir) {
                Ok(Some(s)) if !s.expose().is_empty() => Some(s),
                Ok(Some(_)) => {
                    issues.push(ConfigIssue {
                        key: format!("{key}.secret"),
                        message: "is empty".into(),
                    });
                    None
                }
                Ok(None) => {
                    issues.push(ConfigIssue {
                        key: format!("{key}.secret"),
                        message: "is missing: the secret the provider signs its callbacks with, as { env = \"VAR\" } or { file = \"path\" }".into(),
                    });
                    None
                }
                Err(e) => {
                    issues.push(e);
                    None
                }
            };
            let url = match hook.get("url") {
                None if kind == HookKind::BigBlueButton
                    && listen.is_some_and(|l| l.ip().is_unspecified()) =>
                {
                    issues.push(ConfigIssue {
                        key: format!("{key}.url"),
                        message: "is missing, and webhooks.listen does not name a host a callback could be addressed to; set it to the callback URL registered with hooks/create".into(),
                    });
                    String::new()
                }
                None => listen
                    .map(|l| format!("http://{l}/webhooks/{name}"))
                    .unwrap_or_default(),
                Some(toml::Value::String(u))
                    if u.starts_with("http://") || u.starts_with("https://") =>
                {
                    u.clone()
                }
                Some(_) => {
                    issues.push(ConfigIssue {
                        key: format!("{key}.url"),
                        message: "must be the callback URL registered with hooks/create, starting with http:// or https://".into(),
                    });
                    String::new()
                }
            };
            let options = &p.options;
            let account = match kind {
                HookKind::Tencent => options.get("sdkappid").map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                HookKind::Easemob => match (
                    options.get("org").and_then(toml::Value::as_str),
                    options.get("app").and_then(toml::Value::as_str),
                ) {
                    (Some(org), Some(app)) => Some(format!("{org}#{app}")),
                    _ => None,
                },
                _ => None,
            };
            if let Some(secret) = secret {
                providers.insert(
                    name.clone(),
                    ProviderHook {
                        kind,
                        secret,
                        url,
                        account,
                    },
                );
            }
        }
        if providers.is_empty() && issues.is_empty() {
            issues.push(ConfigIssue {
                key: "webhooks".into(),
                message: "no provider has a [providers.NAME.inbound] section, so no callback would be accepted".into(),
            });
        }
        match (issues.is_empty(), listen) {
            (true, Some(listen)) => Ok(Some(WebhookSettings {
                listen,
                max_body_bytes: (max_body_kb as usize) << 10,
                max_skew: Duration::from_secs(max_skew_s),
                providers,
            })),
            _ => Err(issues),
        }
    }
}

pub(crate) fn parse_listen(
    value: Option<&toml::Value>,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<SocketAddr> {
    match value {
        Some(toml::Value::String(s)) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(ConfigIssue {
                    key: key.into(),
                    message: format!(
                        "`{s}` is not an address and port, such as \"127.0.0.1:8080\""
                    ),
                });
                None
            }
        },
        Some(_) => {
            issues.push(ConfigIssue {
                key: key.into(),
                message: "must be a string such as \"127.0.0.1:8080\"".into(),
            });
            None
        }
        None => {
            issues.push(ConfigIssue {
                key: key.into(),
                message:
                    "is missing: the address and port to listen on, such as \"127.0.0.1:8080\""
                        .into(),
            });
            None
        }
    }
}

fn int_in(
    value: Option<&toml::Value>,
    key: &str,
    min: u64,
    max: u64,
    default: u64,
    issues: &mut Vec<ConfigIssue>,
) -> u64 {
    match value {
        None => default,
        Some(toml::Value::Integer(i)) if (min as i64..=max as i64).contains(i) => *i as u64,
        Some(_) => {
            issues.push(ConfigIssue {
                key: key.into(),
                message: format!("must be a whole number between {min} and {max}"),
            });
            default
        }
    }
}

/// Ids of calls already handled, so a duplicate or a replay is refused.
/// Bounded in time and size; the oldest ids go first.
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct ReplayInner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(REPLAY_TTL, REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    pub fn new(ttl: Duration, capacity: usize) -> ReplayCache {
        ReplayCache {
            inner: Mutex::new(ReplayInner::default()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Records `key`; false when it was already there (a replay).
    pub fn first_time(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.ttl && inner.order.len() < self.capacity {
                break;
            }
            if let Some((_, old)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
        if inner.seen.contains_key(key) {
            return false;
        }
        inner.seen.insert(key.to_string(), now);
        inner.order.push_back((now, key.to_string()));
        true
    }
}

/// One inbound call, as the verifiers see it.
pub(crate) struct Call<'a> {
    pub query: Vec<(String, String)>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now_ms: u64,
    pub max_skew_ms: u64,
}

impl Call<'_> {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks a provider's time (Unix ms) against ours.
    pub fn check_fresh(&self, sent_ms: u64) -> Result<(), Refusal> {
        if self.now_ms.abs_diff(sent_ms) > self.max_skew_ms {
            Err(Refusal::Stale(format!(
                "its time is {} s away from ours; at most {} s is accepted",
                self.now_ms.abs_diff(sent_ms) / 1000,
                self.max_skew_ms / 1000
            )))
        } else {
            Ok(())
        }
    }
}

/// Why a call is refused. The texts name what is wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401: no credential, or one that does not match.
    Forged(String),
    /// 403: signed, but too far from now.
    Stale(String),
    /// 400: not the provider's shape.
    Malformed(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Forged(_) => StatusCode::UNAUTHORIZED,
            Refusal::Stale(_) => StatusCode::FORBIDDEN,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Refusal::Forged(r) | Refusal::Stale(r) | Refusal::Malformed(r) => r,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Forged(_) => "forged",
            Refusal::Stale(_) => "stale",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

/// What an authenticated call says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    /// The provider's id for the call (message id, call id) or a hash of
    /// the body; a second call with the same key is a replay.
    pub dedup_key: String,
    pub events: Vec<Incoming>,
}

/// An event before it is addressed to a channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Chat {
        conversation: String,
        sender_id: String,
        sender_name: Option<String>,
        text: String,
        message_id: Option<String>,
        sent_at_ms: Option<u64>,
    },
    Meeting {
        kind: MeetingEventKind,
        meeting_id: String,
        meeting_name: Option<String>,
        user_id: Option<String>,
        user_name: Option<String>,
    },
}

impl Incoming {
    fn on_channel(&self, channel: &str) -> Event {
        match self.clone() {
            Incoming::Chat {
                conversation,
                sender_id,
                sender_name,
                text,
                message_id,
                sent_at_ms,
            } => Event::ChatMessage(ChatMessage {
                channel: channel.into(),
                conversation,
                sender_id,
                sender_name,
                text,
                message_id,
                sent_at_ms,
            }),
            Incoming::Meeting {
                kind,
                meeting_id,
                meeting_name,
                user_id,
                user_name,
            } => Event::Meeting(MeetingEvent {
                channel: channel.into(),
                kind,
                meeting_id,
                meeting_name,
                user_id,
                user_name,
            }),
        }
    }
}

/// Bounds a string taken from a callback: control characters stripped,
/// at most `max` characters.
pub(crate) fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .take(max)
        .collect()
}

pub(crate) fn clean_id(text: &str) -> String {
    clean(text, MAX_ID_CHARS)
}

pub(crate) fn clean_text(text: &str) -> String {
    clean(text, MAX_TEXT_CHARS)
}

/// Compares two byte strings without leaking where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Parses `application/x-www-form-urlencoded` text into pairs.
pub(crate) fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// What the webhook listener shares between calls: the settings of the
/// current config, the runtime, and the replay cache and metrics that
/// outlive config reloads.
pub struct WebhookServer {
    pub settings: WebhookSettings,
    /// Provider name → its channels, by name.
    channels: BTreeMap<String, Vec<String>>,
    runtime: Arc<Runtime>,
    replay: Arc<ReplayCache>,
    metrics: Arc<Metrics>,
}

impl WebhookServer {
    pub fn new(
        settings: WebhookSettings,
        config: &Config,
        runtime: Arc<Runtime>,
        replay: Arc<ReplayCache>,
        metrics: Arc<Metrics>,
    ) -> WebhookServer {
        let mut channels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, channel) in &config.channels {
            channels
                .entry(channel.provider.clone())
                .or_default()
                .push(name.clone());
        }
        WebhookServer {
            settings,
            channels,
            runtime,
            replay,
            metrics,
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.settings.max_body_bytes;
        Router::new()
            .route("/webhooks/{provider}", post(handle))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Serves on `listener` until `stop` is cancelled; calls in flight finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        let app = self.router();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("webhook listener failed: {e}");
        }
    }

    /// Authenticates, parses, de-duplicates and dispatches one call.
    async fn accept(
        &self,
        provider: &str,
        query: Option<String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let Some(hook) = self.settings.providers.get(provider) else {
            return refuse(
                &self.metrics,
                provider,
                StatusCode::NOT_FOUND,
                "unknown",
                "no provider with an `inbound` section by that name",
            );
        };
        let call = Call {
            query: query
                .as_deref()
                .map(|q| form_pairs(q.as_bytes()))
                .unwrap_or_default(),
            headers,
            body,
            now_ms: now_ms(),
            max_skew_ms: self.settings.max_skew.as_millis() as u64,
        };
        let parsed = match hook.kind {
            HookKind::BigBlueButton => {
                bigbluebutton::verify(hook, &call).and_then(|()| bigbluebutton::parse(&call))
            }
            HookKind::Tencent => tencent::verify(hook, &call).and_then(|()| tencent::parse(&call)),
            HookKind::Easemob => easemob::verify(hook, &call).and_then(|()| easemob::parse(&call)),
            HookKind::Bitrix24 => {
                bitrix24::verify(hook, &call).and_then(|()| bitrix24::parse(&call))
            }
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(refusal) => {
                return refuse(
                    &self.metrics,
                    provider,
                    refusal.status(),
                    refusal.outcome(),
                    refusal.reason(),
                );
            }
        };
        let key = format!("{provider}\n{}", parsed.dedup_key);
        if !self.replay.first_time(&key) {
            return refuse(
                &self.metrics,
                provider,
                StatusCode::CONFLICT,
                "replay",
                "this call was already handled",
            );
        }
        self.metrics.webhook(provider, "accepted");
        for incoming in &parsed.events {
            self.route(provider, incoming).await;
        }
        let ack = match hook.kind {
            HookKind::Tencent => r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#,
            _ => "ok",
        };
        (StatusCode::OK, ack).into_response()
    }

    /// Hands one event to every plugin granted its kind on one of the
    /// provider's channels, once per plugin. The plugins run side by side,
    /// so a slow one does not hold up the others; the call is answered when
    /// all are done.
    async fn route(&self, provider: &str, incoming: &Incoming) {
        let Some(channels) = self.channels.get(provider) else {
            return;
        };
        let mut calls = tokio::task::JoinSet::new();
        for name in self.runtime.plugin_names() {
            let Some(plugin) = self.runtime.plugin(&name) else {
                continue;
            };
            let grants = &plugin.context.grants;
            let Some(channel) = channels.iter().find(|c| grants.channels.contains(*c)) else {
                continue;
            };
            let event = incoming.on_channel(channel);
            if !grants.allows_event(event_kind(&event)) {
                continue;
            }
            let runtime = self.runtime.clone();
            let provider = provider.to_string();
            let channel = channel.clone();
            calls.spawn(async move {
                if let Err(e) = runtime.dispatch_to(&plugin, &event).await {
                    tracing::warn!(provider, channel, "webhook event: {e}");
                }
            });
        }
        while calls.join_next().await.is_some() {}
    }
}

async fn handle(
    State(server): State<Arc<WebhookServer>>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    server.accept(&provider, query, &headers, &body).await
}

fn refuse(
    metrics: &Metrics,
    provider: &str,
    status: StatusCode,
    outcome: &'static str,
    reason: &str,
) -> Response {
    let shown = sanitize::for_log(provider, 64);
    if outcome != "unknown" {
        metrics.webhook(&shown, outcome);
    }
    tracing::warn!(provider = %shown, status = status.as_u16(), "webhook refused: {reason}");
    (status, format!("{outcome}: {reason}\n")).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// For `fuzz/` only: every provider's callback parser on an arbitrary body
/// and query, and the conversion of what it finds into WIT events. Returns
/// the events, for the fuzz target's own checks.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse(query: &[u8], headers: &HeaderMap, body: &[u8], now_ms: u64) -> Vec<Event> {
    let call = Call {
        query: form_pairs(query),
        headers,
        body,
        now_ms,
        max_skew_ms: 60_000,
    };
    let parsers: [fn(&Call) -> Result<Parsed, Refusal>; 4] = [
        bigbluebutton::parse,
        tencent::parse,
        easemob::parse,
        bitrix24::parse,
    ];
    let mut events = Vec::new();
    for parse in parsers {
        match parse(&call) {
            Ok(parsed) => events.extend(parsed.events.iter().map(|i| i.on_channel("lobby"))),
            Err(refusal) => {
                let _ = (refusal.status(), refusal.outcome(), refusal.reason());
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_the_second_and_forgets_the_oldest() {
        let cache = ReplayCache::new(Duration::from_secs(60), 2);
        assert!(cache.first_time("a"));
        assert!(!cache.first_time("a"));
        assert!(cache.first_time("b"));
        assert!(cache.first_time("c"));
        // "a" was evicted to keep the cache at its capacity.
        assert!(cache.first_time("a"));
    }

    #[test]
    fn clean_strips_controls_and_bounds_length() {
        assert_eq!(clean("a\u{1b}[31mb\nc", 100), "a[31mb\nc");
        assert_eq!(clean("abcdef", 3), "abc");
    }

    fn config(text: &str) -> Config {
        Config::parse(
            text,
            std::path::Path::new("botbox.toml"),
            std::path::Path::new("/cfg"),
        )
        .unwrap()
    }

    #[test]
    fn settings_report_every_problem_with_its_key() {
        let c = config(
            r#"
            [webhooks]
            listen = "nowhere"
            max_body_kb = 0
            colour = "red"
            [providers.out]
            kind = "console"
            inbound = { secret = { env = "X" } }
            [providers.bbb]
            kind = "bigbluebutton"
            url = "http://127.0.0.1:1/bigbluebutton/api"
            secret = { env = "BOTBOX_TEST_NOPE" }
            inbound = { secret = "inline", url = "ftp://x", extra = 1 }
            "#,
        );
        let issues = WebhookSettings::from_config(&c).unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        for expected in [
            "webhooks.colour",
            "webhooks.listen",
            "webhooks.max_body_kb",
            "providers.out.inbound",
            "providers.bbb.inbound.extra",
            "providers.bbb.inbound.secret",
            "providers.bbb.inbound.url",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        let text = format!("{issues:?}");
        assert!(!text.contains("inline\""), "{text}");
    }

    #[test]
    fn bbb_behind_a_wildcard_listener_needs_its_url_and_others_get_defaults() {
        let text = |listen: &str| {
            format!(
                r#"
                [webhooks]
                listen = "{listen}"
                [providers.bbb]
                kind = "bigbluebutton"
                inbound = {{ secret = {{ env = "PATH" }} }}
                "#
            )
        };
        let issues = WebhookSettings::from_config(&config(&text("0.0.0.0:8080"))).unwrap_err();
        assert_eq!(issues[0].key, "providers.bbb.inbound.url");
        let settings = WebhookSettings::from_config(&config(&text("127.0.0.1:8080")))
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.providers["bbb"].url,
            "http://127.0.0.1:8080/webhooks/bbb"
        );
        assert_eq!(settings.max_body_bytes, 64 << 10);
        assert_eq!(settings.max_skew, Duration::from_secs(60));
    }

    #[test]
    fn a_webhook_without_a_listener_is_an_issue() {
        let c = config(
            r#"
            [providers.b]
            kind = "bitrix24"
            inbound = { secret = { env = "X" } }
            "#,
        );
        let issues = WebhookSettings::from_config(&c).unwrap_err();
        assert_eq!(issues[0].key, "providers.b.inbound");
    }
}
