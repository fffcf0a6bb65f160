//! The admin API and Prometheus metrics, on their own listener.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:9090"                  # the default; keep it on loopback
//! token = { env = "BOTBOX_ADMIN_TOKEN" }     # required: `Authorization: Bearer …`
//! ```
//!
//! | route | what |
//! |---|---|
//! | `GET /plugins` | every configured plugin: `state` (`loaded` or `not-loaded`), generation, grants, limits, stats |
//! | `POST /plugins/{name}/events` | one event, the JSON of `botbox call --event`; 200 handled, 422 the plugin failed it, 404 no such plugin, 403 not granted, 503 busy; the answer lists the receipts of the messages the call sent (and the broadcasts refused) |
//! | `GET /outbox?state=&plugin=&channel=&limit=` | outbox messages, newest first |
//! | `GET /endpoints` | each provider endpoint: every throttle limit's use (used / limit / resets-at), the next slot, the queue per plugin, the provider's last refusal |
//! | `GET /metrics` | the Prometheus text format, with the same figures as gauges |
//! | `GET /healthz` | `ok`: the process answers (no token) |
//! | `GET /readyz` | `ready`, or 503 `not ready: <reason>` (no token) |
//! | `/console/…` | the web console ([`super::console`]): its own login with the same token |
//!
//! Every route but the two probes needs the bearer token (compared in
//! constant time); a missing or wrong one is 401. The probes say nothing
//! but their verdict: no version, path, plugin, host or error text (those
//! go to the log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::capabilities::broadcast::{Sent, SentLog};
use crate::config::{Config, ConfigIssue, Secret, take_secret};
use crate::delivery::Delivery;
use crate::delivery::store::{ListFilter, MessageState, OutboxStore};
use crate::delivery::throttle::LimitUsage;
use crate::events::{event_kind_name, parse_event};
use crate::providers::unknown_keys;
use crate::runtime::{HandleError, Runtime};
use crate::sanitize;
use crate::triggers::console::Console;
use crate::triggers::metrics::Metrics;
use crate::triggers::webhooks::{parse_listen, same};
use crate::wit::types::BroadcastError;

/// The default admin address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// The `[admin]` section: where the admin API listens and its bearer token.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `admin.listen`.
    pub listen: SocketAddr,
    /// `admin.token`, at least 16 characters.
    pub token: Secret,
}

impl AdminSettings {
    /// Reads `[admin]`, if set, reporting every problem with its key.
    pub fn from_config(config: &Config) -> Result<Option<AdminSettings>, Vec<ConfigIssue>> {
        let Some(table) = &config.admin else {
            return Ok(None);
        };
        let mut issues = unknown_keys(table, &["listen", "token"], "admin");
        let default = toml::Value::String(DEFAULT_LISTEN.into());
        let listen = parse_listen(
            Some(table.get("listen").unwrap_or(&default)),
            "admin.listen",
            &mut issues,
        );
        let token = match take_secret(table, "token", "admin", &config.base_dir) {
            Ok(Some(t)) if t.expose().len() >= 16 => Some(t),
            Ok(Some(_)) => {
                issues.push(ConfigIssue {
                    key: "admin.token".into(),
                    message: "is shorter than 16 characters; use a long random token".into(),
                });
                None
            }
            Ok(None) => {
                issues.push(ConfigIssue {
                    key: "admin.token".into(),
                    message: "is missing: the admin API needs a bearer token, as { env = \"VAR\" } or { file = \"path\" }".into(),
                });
                None
            }
            Err(e) => {
                issues.push(e);
                None
            }
        };
        match (listen, token) {
            (Some(listen), Some(token)) if issues.is_empty() => {
                Ok(Some(AdminSettings { listen, token }))
            }
            _ => Err(issues),
        }
    }
}

/// The admin API (`/plugins`, `/plugins/{name}/events`, `/outbox`) and
/// `/metrics`, behind the bearer token.
pub struct AdminServer {
    /// Where it listens and the token it asks for.
    pub settings: AdminSettings,
    /// Plugins the config names, loaded or not.
    configured: Vec<String>,
    runtime: Arc<Runtime>,
    delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
    /// The last readiness verdict and when its probe finished; one probe
    /// runs at a time.
    readiness: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
    /// Whether the last probe found the host ready, to log changes once.
    was_ready: AtomicBool,
    /// The web console, served beside the API with its own sessions.
    console: Arc<Console>,
}

/// What `/readyz` found: ready, or the reason that may be shown.
type Readiness = Result<(), &'static str>;

/// The paths answered without the token: the probes, which say nothing
/// but their verdict.
const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/readyz"];

impl AdminServer {
    /// An admin API over one generation of a host; `configured` names the
    /// config's plugins, loaded or not.
    pub fn new(
        settings: AdminSettings,
        configured: Vec<String>,
        runtime: Arc<Runtime>,
        delivery: Arc<Delivery>,
        metrics: Arc<Metrics>,
    ) -> AdminServer {
        let console = Arc::new(Console::new(
            settings.token.clone(),
            configured.clone(),
            runtime.clone(),
            delivery.clone(),
            metrics.clone(),
        ));
        AdminServer {
            console,
            settings,
            configured,
            runtime,
            delivery,
            metrics,
            readiness: tokio::sync::Mutex::new(None),
            was_ready: AtomicBool::new(true),
        }
    }

    /// Its routes, the token check included.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/plugins", get(plugins))
            .route("/plugins/{name}/events", post(emit))
            .route("/outbox", get(outbox))
            .route("/endpoints", get(endpoints))
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            // A path nobody serves is the API's too, so the token check
            // below answers it (401) and the console's routes stay apart.
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(DefaultBodyLimit::max(256 << 10))
            .layer(middleware::from_fn_with_state(self.clone(), require_token))
            .with_state(self.clone())
            // The console checks its own session cookie, not the bearer token.
            .merge(self.console.clone().router())
    }

    /// Serves on `listener` until `stop`, within the default listen limits.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        let limits = super::ListenLimits::default();
        let console = tokio::spawn(self.console.clone().run(stop.clone()));
        super::serve_http("admin", listener, self.router(), limits, stop).await;
        let _ = console.await;
    }
}

async fn require_token(
    State(server): State<Arc<AdminServer>>,
    request: Request,
    next: Next,
) -> Response {
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(t) if same(t, server.settings.token.expose().as_bytes()) => next.run(request).await,
        _ => {
            tracing::warn!(path = %sanitize::for_log(request.uri().path(), 100), "admin: refused a call without the right token");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "401: the admin API needs `Authorization: Bearer <admin.token>`\n",
            )
                .into_response()
        }
    }
}

async fn plugins(State(server): State<Arc<AdminServer>>) -> Response {
    let mut out = Vec::new();
    let mut names = server.runtime.plugin_names();
    for name in &server.configured {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
    for name in names {
        let Some(p) = server.runtime.plugin(&name) else {
            // Configured, but it did not load (the log says why).
            out.push(json!({ "name": name, "state": "not-loaded" }));
            continue;
        };
        let g = &p.context.grants;
        let s = &p.stats;
        let (_, count, sum_us) = s.latency.snapshot();
        out.push(json!({
            "name": p.name,
            "state": "loaded",
            "generation": p.generation,
            "version": p.context.manifest.as_ref().map(|m| m.version.clone()),
            "grants": {
                "channels": g.channels,
                "events": g.events.iter().map(|e| event_kind_name(*e)).collect::<Vec<_>>(),
                "schedules": g.schedules,
            },
            "limits": {
                "memory_mb": p.limits.memory_bytes >> 20,
                "deadline_ms": p.limits.deadline.as_millis() as u64,
                "max_concurrency": p.limits.max_concurrency,
                "broadcasts_per_minute": p.limits.broadcasts_per_minute,
            },
            "stats": {
                "handled": s.handled.load(Ordering::Relaxed),
                "failed": s.failed.load(Ordering::Relaxed),
                "traps": s.traps.load(Ordering::Relaxed),
                "timeouts": s.timeouts.load(Ordering::Relaxed),
                "out_of_memory": s.out_of_memory.load(Ordering::Relaxed),
                "busy": s.busy.load(Ordering::Relaxed),
                "calls": count,
                "mean_ms": if count == 0 { 0.0 } else { sum_us as f64 / count as f64 / 1000.0 },
            },
        }));
    }
    axum::Json(json!({ "plugins": out })).into_response()
}

async fn emit(
    State(server): State<Arc<AdminServer>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let event = match parse_event(&body) {
        Ok(e) => e,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let started = std::time::Instant::now();
    // The trigger's span: a caller's `traceparent` makes this call part of
    // its trace (it holds the admin token, so it may).
    let span = tracing::debug_span!(
        "admin event",
        otel.kind = "server",
        plugin = %sanitize::for_log(&name, 64),
        event = event_kind_name(crate::events::event_kind(&event)),
    );
    crate::telemetry::continue_from(&span, super::traceparent_header(&headers));
    let dispatched = tracing::Instrument::instrument(server.runtime.dispatch(&name, &event), span);
    let (result, sent) = SentLog::collect(dispatched).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Messages accepted before a plugin failed are on their way all the
    // same, so both answers list them.
    let (receipts, refused) = broadcasts(server.delivery.outbox().clone(), sent).await;
    match result {
        Ok(()) => axum::Json(json!({
            "ok": true,
            "ms": ms,
            "receipts": receipts,
            "refused": refused,
        }))
        .into_response(),
        Err(e) => {
            let status = match &e {
                HandleError::UnknownPlugin(_) => StatusCode::NOT_FOUND,
                HandleError::NotGranted { .. } => StatusCode::FORBIDDEN,
                HandleError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (
                status,
                axum::Json(json!({
                    "ok": false,
                    "error": e.to_string(),
                    "receipts": receipts,
                    "refused": refused,
                })),
            )
                .into_response()
        }
    }
}

/// The receipts a call's broadcasts got, each with its message's state and
/// parts as the outbox has them now, and the broadcasts refused, with the
/// reason the plugin heard.
async fn broadcasts(outbox: Arc<dyn OutboxStore>, sent: Vec<Sent>) -> (Vec<Value>, Vec<Value>) {
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for s in sent {
        match s.outcome {
            Ok(receipt) => accepted.push((s.channel, receipt)),
            Err(e) => refused.push(json!({ "channel": s.channel, "error": refusal(&e) })),
        }
    }
    let looked_up = tokio::task::spawn_blocking(move || {
        accepted
            .into_iter()
            .map(|(channel, receipt)| {
                let stored = outbox.get(&receipt.id).and_then(|record| {
                    let parts = match &record {
                        Some(_) => outbox.parts(&receipt.id)?,
                        None => Vec::new(),
                    };
                    Ok((record, parts))
                });
                let mut answer = json!({
                    "id": receipt.id,
                    "channel": channel,
                    "eta_ms": receipt.eta_ms,
                });
                match stored {
                    Ok((Some(record), parts)) => {
                        answer["state"] = record.state.as_str().into();
                        answer["parts"] = parts
                            .iter()
                            .map(|p| {
                                json!({
                                    "index": p.index,
                                    "target": p.part.target,
                                    "state": p.state.as_str(),
                                    "provider_ids": p.provider_ids,
                                    "error": p.last_error,
                                })
                            })
                            .collect();
                    }
                    // Pruned already (a retention shorter than the call).
                    Ok((None, _)) => answer["state"] = "unknown".into(),
                    Err(e) => {
                        tracing::warn!("admin: cannot read receipt {} back: {e}", receipt.id);
                        answer["state"] = "unknown".into();
                    }
                }
                answer
            })
            .collect::<Vec<_>>()
    })
    .await;
    match looked_up {
        Ok(receipts) => (receipts, refused),
        Err(e) => {
            tracing::error!("admin: reading receipts back failed: {e}");
            (Vec::new(), refused)
        }
    }
}

/// A refused broadcast as `{kind, detail}`, the WIT names of the kinds.
fn refusal(e: &BroadcastError) -> Value {
    let (kind, detail) = match e {
        BroadcastError::NotGranted(d) => ("not-granted", json!(d)),
        BroadcastError::UnknownChannel(d) => ("unknown-channel", json!(d)),
        BroadcastError::Invalid(d) => ("invalid", json!(d)),
        BroadcastError::Unsupported(d) => ("unsupported", json!(d)),
        BroadcastError::QuotaExhausted(ms) => ("quota-exhausted", json!({ "reset_ms": ms })),
        BroadcastError::BacklogFull => ("backlog-full", Value::Null),
        BroadcastError::Internal(d) => ("internal", json!(d)),
    };
    json!({ "kind": kind, "detail": detail })
}

/// The process is up and serving: `ok`, always.
async fn healthz() -> Response {
    probe_answer(StatusCode::OK, "ok\n".into())
}

/// Whether the host can take work: a config is in force (this listener
/// runs only while one is: it starts after the config and its plugins
/// loaded, and is closed while a reload swaps configs) and the outbox
/// takes a write (a SQLite file and its folder, or a reachable PostgreSQL
/// primary; see `OutboxStore::ready`).
async fn readyz(State(server): State<Arc<AdminServer>>) -> Response {
    let asked = Instant::now();
    let mut last = server.readiness.lock().await;
    let cached = *last;
    let verdict = match cached {
        // A probe that finished after this request arrived answers it too:
        // a burst of requests costs one probe, and none gets a stale one.
        Some((finished, verdict)) if finished >= asked => verdict,
        _ => {
            let verdict = server.probe().await;
            *last = Some((Instant::now(), verdict));
            verdict
        }
    };
    drop(last);
    match verdict {
        Ok(()) => probe_answer(StatusCode::OK, "ready\n".into()),
        Err(reason) => probe_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

impl AdminServer {
    /// Runs the outbox's readiness probe off the async workers; logs the
    /// detail when the verdict changes.
    async fn probe(&self) -> Readiness {
        let outbox = self.delivery.outbox().clone();
        let verdict = match tokio::task::spawn_blocking(move || outbox.ready()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                if self.was_ready.load(Ordering::Relaxed) {
                    tracing::warn!("not ready: {e}");
                }
                Err(e.reason())
            }
            Err(e) => {
                tracing::error!("readiness probe failed: {e}");
                Err("readiness probe failed")
            }
        };
        let ready = verdict.is_ok();
        if self.was_ready.swap(ready, Ordering::Relaxed) != ready && ready {
            tracing::info!("ready again: the outbox takes writes");
        }
        verdict
    }
}

/// A probe's answer: plain text, never cached.
fn probe_answer(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct OutboxQuery {
    state: Option<String>,
    plugin: Option<String>,
    channel: Option<String>,
    limit: Option<usize>,
}

async fn outbox(State(server): State<Arc<AdminServer>>, Query(q): Query<OutboxQuery>) -> Response {
    let state = match q.state.as_deref().map(|s| (s, MessageState::parse(s))) {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((s, None)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "`{}` is not a state; use queued, sending, delivered, partial, failed or cancelled\n",
                    sanitize::for_log(s, 32)
                ),
            )
                .into_response();
        }
    };
    let filter = ListFilter {
        state,
        plugin: q.plugin,
        channel: q.channel,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let outbox = server.delivery.outbox().clone();
    let listed = tokio::task::spawn_blocking(move || outbox.list_progress(&filter)).await;
    match listed {
        Ok(Ok(listed)) => {
            // `attempts`: delivery attempts; `requests`: provider requests,
            // the parts' together; each part with its own.
            let messages: Vec<Value> = listed
                .into_iter()
                .map(|m| {
                    let requests = m.requests();
                    let parts: Vec<Value> = m
                        .parts
                        .iter()
                        .map(|p| {
                            json!({
                                "index": p.index,
                                "target": p.target,
                                "state": p.state.as_str(),
                                "requests": p.requests,
                                "last_error": p.last_error,
                            })
                        })
                        .collect();
                    let r = m.record;
                    json!({
                        "id": r.id,
                        "plugin": r.plugin,
                        "channel": r.channel,
                        "state": r.state.as_str(),
                        "attempts": m.attempts,
                        "requests": requests,
                        "parts": parts,
                        "merged_into": m.merged_into,
                        "created_ms": r.created_ms,
                        "next_attempt_ms": r.next_attempt_ms,
                        "finished_ms": r.finished_ms,
                        "last_error": r.last_error,
                        "message": r.message,
                    })
                })
                .collect();
            axum::Json(json!({ "messages": messages })).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("outbox: {e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("outbox: {e}\n")).into_response(),
    }
}

async fn metrics(State(server): State<Arc<AdminServer>>) -> Response {
    let mut text = server.metrics.render(&server.runtime);
    // Without the endpoints, the counters still go out; the log says why.
    if let Some(now) = endpoints_now(&server.delivery).await {
        text.push_str(&crate::triggers::metrics::render_endpoints(&now));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Every endpoint now, read off the async workers; a PostgreSQL that does
/// not answer costs at most [`READY_DEADLINE`](crate::delivery::store::postgres::READY_DEADLINE).
async fn endpoints_now(delivery: &Arc<Delivery>) -> Option<crate::delivery::EndpointsNow> {
    use crate::delivery::store::postgres::{READY_DEADLINE, with_deadline};
    let delivery = delivery.clone();
    let read = tokio::task::spawn_blocking(move || {
        with_deadline(Instant::now() + READY_DEADLINE, || delivery.endpoints_now())
    })
    .await;
    read.map_err(|e| tracing::error!("admin: reading the endpoints failed: {e}"))
        .ok()
}

async fn endpoints(State(server): State<Arc<AdminServer>>) -> Response {
    let Some(now) = endpoints_now(&server.delivery).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "endpoints: reading them failed; the log says why\n",
        )
            .into_response();
    };
    let endpoints: Vec<Value> = now
        .endpoints
        .iter()
        .map(|e| {
            let limits: Vec<Value> = e
                .limits
                .iter()
                .map(|l| match l {
                    LimitUsage::Window {
                        limit,
                        period_ms,
                        used,
                        frees_at_ms,
                        resets_at_ms,
                    } => json!({
                        "type": "window",
                        "spelled": l.spelled(),
                        "limit": limit,
                        "period_ms": period_ms,
                        "daily": l.is_daily(),
                        "used": used,
                        "frees_at_ms": frees_at_ms,
                        "resets_at_ms": resets_at_ms,
                    }),
                    LimitUsage::Bucket {
                        level,
                        burst,
                        per_second,
                        empty_at_ms,
                    } => json!({
                        "type": "bucket",
                        "spelled": l.spelled(),
                        "burst": burst,
                        "per_second": per_second,
                        "level": level,
                        "empty_at_ms": empty_at_ms,
                    }),
                    LimitUsage::Budget {
                        seconds,
                        period_ms,
                        spent_ms,
                        resets_at_ms,
                    } => json!({
                        "type": "budget",
                        "spelled": l.spelled(),
                        "seconds": seconds,
                        "period_ms": period_ms,
                        "spent_ms": spent_ms,
                        "resets_at_ms": resets_at_ms,
                    }),
                    LimitUsage::PerDay {
                        limit,
                        utc_offset_minutes,
                        used,
                        resets_at_ms,
                    } => json!({
                        "type": "calendar-day",
                        "spelled": l.spelled(),
                        "limit": limit,
                        "utc_offset_minutes": utc_offset_minutes,
                        "daily": true,
                        "used": used,
                        "resets_at_ms": resets_at_ms,
                    }),
                })
                .collect();
            json!({
                "endpoint": e.endpoint,
                "kind": e.kind,
                "limits": limits,
                "next_slot_ms": e.next_slot_ms,
                "next_due_ms": e.next_due_ms,
                "queue": e.queue.iter().map(|q| json!({
                    "plugin": q.plugin,
                    "messages": q.messages,
                    "requests": q.requests,
                })).collect::<Vec<_>>(),
                "last_refusal": e.last_refusal.as_ref().map(|r| json!({
                    "at_ms": r.at_ms,
                    "outcome": r.outcome,
                    "code": r.code,
                    "reason": r.reason,
                })),
                "error": e.unreadable,
            })
        })
        .collect();
    axum::Json(json!({ "now_ms": now.now_ms, "endpoints": endpoints })).into_response()
}

/// Counts broadcasts by provider account, outcome and plugin, and the
/// measured throttle waits,
/// from the delivery engine's observers, until `stop`.
pub async fn observe_delivery(
    delivery: Arc<Delivery>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut throttled = delivery.observers().throttled.subscribe();
    let mut slowed = delivery.observers().slowed.subscribe();
    let mut finished = delivery.observers().finished.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            t = throttled.recv() => match t {
                Ok(t) => metrics.throttle_wait(&t.endpoint, &t.plugin, t.waited),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
            s = slowed.recv() => match s {
                Ok(s) => metrics.slowed(s.provider_kind, &s.endpoint, s.factor),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
            f = finished.recv() => match f {
                Ok(f) => {
                    let provider = config
                        .channels
                        .get(&f.channel)
                        .map(|c| c.provider.as_str())
                        .unwrap_or("unknown");
                    metrics.broadcast(provider, f.state.as_str(), &f.plugin);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
        }
    }
}
