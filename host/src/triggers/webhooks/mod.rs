//! Inbound provider callbacks: an HTTP listener that has each call
//! authenticated exactly as its provider signs it (the provider's own
//! [`Inbound`], found through the provider registry), refuses forged, stale
//! and replayed calls, turns what it says into WIT events and hands each to
//! the plugins granted that event kind on that channel. Nothing here knows
//! a provider: HTTP, size and time limits, the replay cache, metrics, the
//! refusal log and the fan-out to plugins are the same for all.
//!
//! ```toml
//! [webhooks]
//! listen = "127.0.0.1:8080"        # POST /webhooks/{provider name}
//! max_body_kb = 64                 # larger bodies: 413
//! max_skew_s = 60                  # Tencent, Easemob, Bitrix24 time checks
//! read_timeout_s = 10              # headers, and the body, each within this
//! max_connections = 256            # more at once: 503 and closed
//!
//! [providers.campus-bbb.inbound]
//! secret = { env = "BBB_WEBHOOK_SECRET" }
//! url = "https://bot.example.edu/webhooks/campus-bbb"   # BBB only: as registered
//! ```
//!
//! Status codes: 200 accepted (also for events no plugin wants), 400
//! malformed, 401 forged or missing credentials, 403 stale, 404 no such
//! provider (or it has no `inbound` section), 408 body not sent within
//! `read_timeout_s`, 409 replay (a call already handled), 413 body too
//! large, 503 replay cache full (the provider retries). Every refusal is
//! counted in `/metrics`; the log gets the first few of each
//! [`REFUSAL_LOG_WINDOW`] and then one summary line, never a credential or
//! a signature, so a flood of forged calls cannot flood the log.
//!
//! Routing: an event from provider account P goes to the channels whose
//! `provider = "P"`. Each plugin gets it at most once, on the first of its
//! granted channels of P (by name), and only when it is granted the event
//! kind (`chat-message` or `meeting`).

pub mod register;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigIssue, Secret, take_secret, unknown_keys};
use crate::providers::inbound::{Call, Inbound, InboundSetup, Incoming, REPLAY_TTL, form_pairs};
use crate::providers::inbound_kinds_text;
use crate::runtime::Runtime;
use crate::sanitize;
use crate::triggers::metrics::Metrics;

/// For `fuzz/`: every provider's callback parser (see
/// [`crate::providers::inbound::fuzz_parse`]).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use crate::providers::inbound::fuzz_parse;
/// Constant-time comparison, shared with the admin listener's token check.
pub(crate) use crate::providers::inbound::same;

/// Default largest accepted body.
pub const DEFAULT_MAX_BODY_KB: u64 = 64;
/// Default tolerance of the time checks (the Tencent documentation's 60 s).
pub const DEFAULT_MAX_SKEW_S: u64 = 60;
/// How many handled calls' ids are remembered. Each is kept for the whole
/// window in which the call would be accepted; when all are still needed,
/// a new call is refused (503) rather than an id forgotten.
const REPLAY_CAPACITY: usize = 100_000;
/// Default time a client has to send its headers, and then its body.
pub const DEFAULT_READ_TIMEOUT_S: u64 = 10;
/// Default cap on connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 256;
/// Refusals logged one by one per window; the rest are summed up.
const REFUSAL_LOG_BURST: u32 = 5;
/// The refusal log's window.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// One provider account's inbound authentication.
#[derive(Debug, Clone)]
pub struct ProviderHook {
    /// The provider's kind, such as "bigbluebutton".
    pub kind: &'static str,
    /// The callback URL: the one the provider was told where it says
    /// (BigBlueButton's `inbound.url`), else `http://{listen}/webhooks/{name}`.
    pub url: String,
    /// The provider's own verifier, parser and ack.
    pub inbound: Arc<dyn Inbound>,
}

/// The validated `[webhooks]` section and every `[providers.*.inbound]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `webhooks.listen`.
    pub listen: SocketAddr,
    /// `webhooks.max_body_kb`, in bytes.
    pub max_body_bytes: usize,
    /// `webhooks.max_skew_s`: the tolerance of the providers' time checks.
    pub max_skew: Duration,
    /// Headers, then the body, must each arrive within this.
    pub read_timeout: Duration,
    /// `webhooks.max_connections`.
    pub max_connections: usize,
    /// Every provider account with an `inbound` section, by name.
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
            &[
                "listen",
                "max_body_kb",
                "max_skew_s",
                "read_timeout_s",
                "max_connections",
            ],
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
        let read_timeout_s = int_in(
            table.get("read_timeout_s"),
            "webhooks.read_timeout_s",
            1,
            300,
            DEFAULT_READ_TIMEOUT_S,
            &mut issues,
        );
        let max_connections = int_in(
            table.get("max_connections"),
            "webhooks.max_connections",
            1,
            65_536,
            DEFAULT_MAX_CONNECTIONS,
            &mut issues,
        );
        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            let Some(value) = &p.inbound else { continue };
            let key = format!("providers.{name}.inbound");
            let Some((kind, inbound)) =
                crate::providers::kind(&p.kind).and_then(|k| Some((k.name, k.inbound?)))
            else {
                issues.push(ConfigIssue {
                    key,
                    message: format!(
                        "provider kind `{}` sends no callbacks; `inbound` exists for {}",
                        p.kind,
                        inbound_kinds_text()
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
            issues.extend(unknown_keys(hook, inbound.keys, &key));
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
            // The provider reads the rest of its section (and its own
            // options) even when the secret is wrong, so every problem is
            // reported at once.
            let built = (inbound.setup)(&InboundSetup {
                name,
                key: &key,
                table: hook,
                options: &p.options,
                secret: secret.clone().unwrap_or_else(|| Secret::new(String::new())),
                listen,
                base_dir: &config.base_dir,
            });
            match (built, secret) {
                (Ok(inbound), Some(_)) => {
                    let url = match inbound.callback_url() {
                        Some(url) => url.to_string(),
                        None => listen
                            .map(|l| format!("http://{l}/webhooks/{name}"))
                            .unwrap_or_default(),
                    };
                    providers.insert(
                        name.clone(),
                        ProviderHook {
                            kind,
                            url,
                            inbound: Arc::from(inbound),
                        },
                    );
                }
                (Ok(_), None) => {}
                (Err(mut e), _) => issues.append(&mut e),
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
                read_timeout: Duration::from_secs(read_timeout_s),
                max_connections: max_connections as usize,
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
/// Each id is kept until the call it names would be refused as stale
/// anyway; when the cache is full of ids still needed, a new call is
/// refused rather than an id forgotten (forgetting one would reopen it to
/// replay).
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
    capacity: usize,
}

#[derive(Default)]
struct ReplayInner {
    seen: HashMap<String, Instant>,
    by_expiry: BTreeSet<(Instant, String)>,
}

/// What the replay cache says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before; now remembered.
    First,
    /// Already handled.
    Replay,
    /// Every remembered id is still needed and there is no room.
    Full,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// A cache remembering at most `capacity` ids.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            inner: Mutex::new(ReplayInner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Records `key`, to be kept until `keep_until`.
    pub fn check(&self, key: &str, keep_until: Instant) -> Seen {
        self.check_at(key, keep_until, Instant::now())
    }

    fn check_at(&self, key: &str, keep_until: Instant, now: Instant) -> Seen {
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((until, _)) = inner.by_expiry.first() {
            if *until > now {
                break;
            }
            if let Some((_, old)) = inner.by_expiry.pop_first() {
                inner.seen.remove(&old);
            }
        }
        if inner.seen.contains_key(key) {
            return Seen::Replay;
        }
        if inner.seen.len() >= self.capacity {
            return Seen::Full;
        }
        inner.seen.insert(key.to_string(), keep_until);
        inner.by_expiry.insert((keep_until, key.to_string()));
        Seen::First
    }
}

/// Logs refusals one line each up to a few per window, then one summary
/// line for the rest; `/metrics` keeps the exact counts.
pub struct RefusalLog {
    inner: Mutex<RefusalLogInner>,
    burst: u32,
    window: Duration,
}

struct RefusalLogInner {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Shows `burst` refusals per `window`, then sums up the rest.
    pub fn new(burst: u32, window: Duration) -> RefusalLog {
        RefusalLog {
            inner: Mutex::new(RefusalLogInner {
                since: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
            burst,
            window,
        }
    }

    /// Calls `log` when this refusal is one to show; first writes the
    /// summary of the previous window's unshown ones.
    pub fn refused(&self, what: &str, log: impl FnOnce()) {
        let (show, summary) = {
            let mut inner = match self.inner.lock() {
                Ok(i) => i,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut summary = None;
            if inner.since.elapsed() >= self.window {
                if inner.suppressed > 0 {
                    summary = Some((inner.suppressed, inner.since.elapsed()));
                }
                inner.since = Instant::now();
                inner.logged = 0;
                inner.suppressed = 0;
            }
            let show = inner.logged < self.burst;
            if show {
                inner.logged += 1;
            } else {
                inner.suppressed += 1;
            }
            (show, summary)
        };
        if let Some((n, over)) = summary {
            tracing::warn!(
                "{what}: {n} more refused in the last {} s, not logged one by one; /metrics counts every one",
                over.as_secs()
            );
        }
        if show {
            log();
        }
    }

    /// The summary of refusals not yet reported (at shutdown).
    pub fn flush(&self, what: &str) {
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        if inner.suppressed > 0 {
            tracing::warn!(
                "{what}: {} more refused in the last {} s, not logged one by one; /metrics counts every one",
                inner.suppressed,
                inner.since.elapsed().as_secs()
            );
            inner.suppressed = 0;
        }
    }
}

/// What the webhook listener shares between calls: the settings of the
/// current config, the runtime, and the replay cache and metrics that
/// outlive config reloads.
pub struct WebhookServer {
    /// The `[webhooks]` section and the providers' inbound verifiers.
    pub settings: WebhookSettings,
    /// Provider name → its channels, by name.
    channels: BTreeMap<String, Vec<String>>,
    runtime: Arc<Runtime>,
    replay: Arc<ReplayCache>,
    metrics: Arc<Metrics>,
    refusals: RefusalLog,
}

impl WebhookServer {
    /// The listener of one config generation; `replay` and `metrics`
    /// come from the host and outlive it.
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
            refusals: RefusalLog::new(REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW),
        }
    }

    /// The HTTP routes: `POST /webhooks/{provider}`, with the body limit.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.settings.max_body_bytes;
        Router::new()
            .route("/webhooks/{provider}", post(handle))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Serves on `listener` until `stop` is cancelled; calls in flight get
    /// [`super::SHUTDOWN_DEADLINE`] to finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        let limits = super::ListenLimits {
            read_timeout: self.settings.read_timeout,
            max_connections: self.settings.max_connections,
            shutdown_deadline: super::SHUTDOWN_DEADLINE,
        };
        let app = self.clone().router();
        super::serve_http("webhooks", listener, app, limits, stop).await;
        self.refusals.flush("webhooks");
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
            return self.refuse(
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
            fresh_until_ms: Cell::new(None),
        };
        let parsed = hook
            .inbound
            .verify(&call)
            .and_then(|()| hook.inbound.parse(&call));
        let parsed = match parsed {
            Ok(p) => p,
            Err(refusal) => {
                return self.refuse(
                    provider,
                    refusal.status(),
                    refusal.outcome(),
                    refusal.reason(),
                );
            }
        };
        let key = format!("{provider}\n{}", parsed.dedup_key);
        // Keep the id while the call would still pass the time checks (at
        // least `max_skew_s`; a call with no time of its own, an hour), and
        // a second more for clocks that read the same instant differently.
        let window = match call.fresh_until_ms.get() {
            Some(until) => {
                Duration::from_millis(until.saturating_sub(call.now_ms)).max(self.settings.max_skew)
            }
            None => REPLAY_TTL,
        };
        match self
            .replay
            .check(&key, Instant::now() + window + Duration::from_secs(1))
        {
            Seen::First => {}
            Seen::Replay => {
                return self.refuse(
                    provider,
                    StatusCode::CONFLICT,
                    "replay",
                    "this call was already handled",
                );
            }
            Seen::Full => {
                return self.refuse(
                    provider,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the replay cache is full of calls still inside their time window; retry later",
                );
            }
        }
        self.metrics.webhook(provider, "accepted");
        // Only an authenticated call may continue its sender's trace.
        let span = tracing::debug_span!(
            "webhook",
            otel.kind = "server",
            provider,
            events = parsed.events.len()
        );
        crate::telemetry::continue_from(&span, super::traceparent_header(headers));
        let routed = async {
            for incoming in &parsed.events {
                self.route(provider, incoming).await;
            }
        };
        tracing::Instrument::instrument(routed, span).await;
        (StatusCode::OK, hook.inbound.ack(&call, &parsed)).into_response()
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
        let recipients =
            crate::router::on_channels(&self.runtime, channels, |c| incoming.on_channel(c));
        for crate::router::Recipient {
            plugin,
            channel,
            event,
        } in recipients
        {
            let runtime = self.runtime.clone();
            let provider = provider.to_string();
            let channel = channel.to_string();
            let call = async move {
                if let Err(e) = runtime.dispatch_to(&plugin, &event).await {
                    tracing::warn!(provider, channel, "webhook event: {e}");
                }
            };
            calls.spawn(tracing::Instrument::in_current_span(call));
        }
        while calls.join_next().await.is_some() {}
    }
}

async fn handle(
    State(server): State<Arc<WebhookServer>>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    if !server.settings.providers.contains_key(&provider) {
        return server.refuse(
            &provider,
            StatusCode::NOT_FOUND,
            "unknown",
            "no provider with an `inbound` section by that name",
        );
    }
    let headers = request.headers().clone();
    // The body must arrive within `read_timeout_s`: a client that sends
    // half of it and stalls is cut off, not waited for.
    let read = tokio::time::timeout(
        server.settings.read_timeout,
        Bytes::from_request(request, &()),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => {
            let status = rejection.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "the body is larger than webhooks.max_body_kb"
            } else {
                "the body could not be read"
            };
            return server.refuse(&provider, status, "malformed", reason);
        }
        Err(_) => {
            return server.refuse(
                &provider,
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body did not arrive within webhooks.read_timeout_s",
            );
        }
    };
    server.accept(&provider, query, &headers, &body).await
}

impl WebhookServer {
    /// Answers a refusal: counted in `/metrics` (for a configured provider;
    /// an unknown name is not made a metric label), logged within the
    /// refusal log's budget.
    fn refuse(
        &self,
        provider: &str,
        status: StatusCode,
        outcome: &'static str,
        reason: &str,
    ) -> Response {
        let shown = sanitize::for_log(provider, 64);
        if outcome != "unknown" {
            self.metrics.webhook(&shown, outcome);
        }
        self.metrics
            .webhook_refused(crate::triggers::metrics::WebhookRefusal {
                at_ms: now_ms(),
                provider: shown.clone(),
                status: status.as_u16(),
                outcome,
                reason: sanitize::for_log(reason, 300),
            });
        self.refusals.refused("webhooks", || {
            tracing::warn!(provider = %shown, status = status.as_u16(), "webhook refused: {reason}");
        });
        (status, format!("{outcome}: {reason}\n")).into_response()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_keeps_each_id_its_whole_window_and_refuses_when_full() {
        let cache = ReplayCache::new(2);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // "a" is future-dated: acceptable for 120 s, so kept 120 s.
        assert_eq!(cache.check_at("a", t0 + s(120), t0), Seen::First);
        assert_eq!(cache.check_at("a", t0 + s(120), t0 + s(1)), Seen::Replay);
        assert_eq!(cache.check_at("b", t0 + s(60), t0 + s(2)), Seen::First);
        // Full of ids still needed: the new call is refused, nothing is
        // forgotten to make room.
        assert_eq!(cache.check_at("c", t0 + s(60), t0 + s(3)), Seen::Full);
        assert_eq!(cache.check_at("a", t0 + s(120), t0 + s(3)), Seen::Replay);
        assert_eq!(cache.check_at("b", t0 + s(60), t0 + s(3)), Seen::Replay);
        // Past "b"'s window there is room again; "a" is still a replay at
        // 100 s, though older than one skew (60 s).
        assert_eq!(cache.check_at("c", t0 + s(160), t0 + s(61)), Seen::First);
        assert_eq!(cache.check_at("a", t0 + s(120), t0 + s(100)), Seen::Replay);
        // Once a window is over, so is the id's need.
        assert_eq!(cache.check_at("a", t0 + s(220), t0 + s(121)), Seen::First);
    }

    #[test]
    fn refusals_are_logged_a_few_at_a_time() {
        let log = RefusalLog::new(3, Duration::from_secs(3600));
        let mut shown = 0;
        for _ in 0..2000 {
            log.refused("test", || shown += 1);
        }
        assert_eq!(shown, 3);
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
            inbound = { secret = "inline", url = "ftp://x", extra = 1, checksum = "md5" }
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
            "providers.bbb.inbound.checksum",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        let console = issues
            .iter()
            .find(|i| i.key == "providers.out.inbound")
            .unwrap();
        assert_eq!(
            console.message,
            "provider kind `console` sends no callbacks; `inbound` exists for bigbluebutton, tencent, easemob and bitrix24"
        );
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
        assert!(
            format!("{:?}", settings.providers["bbb"].inbound).contains("checksum: Sha256"),
            "{settings:?}"
        );
        let with = |extra: &str| {
            let text = text("127.0.0.1:8080").replace("kind = \"bigbluebutton\"", extra);
            WebhookSettings::from_config(&config(&text))
                .unwrap()
                .unwrap()
        };
        // The inbound algorithm follows the provider's, unless set itself.
        let sha1 = with("kind = \"bigbluebutton\"\n checksum = \"sha1\"");
        assert!(
            format!("{:?}", sha1.providers["bbb"].inbound).contains("checksum: Sha1"),
            "{sha1:?}"
        );
        assert_eq!(settings.max_body_bytes, 64 << 10);
        assert_eq!(settings.read_timeout, Duration::from_secs(10));
        assert_eq!(settings.max_connections, 256);
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
