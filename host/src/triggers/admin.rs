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
//! | `POST /plugins/{name}/events` | one event, the JSON of `botbox call --event`; 200 handled, 422 the plugin failed it, 404 no such plugin, 403 not granted, 503 busy |
//! | `GET /outbox?state=&plugin=&channel=&limit=` | outbox messages, newest first |
//! | `GET /metrics` | the Prometheus text format |
//!
//! Every route needs the bearer token (compared in constant time); a
//! missing or wrong one is 401.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigIssue, Secret, take_secret};
use crate::delivery::Delivery;
use crate::delivery::store::{ListFilter, MessageState};
use crate::events::{event_kind_name, parse_event};
use crate::providers::unknown_keys;
use crate::runtime::{HandleError, Runtime};
use crate::sanitize;
use crate::triggers::metrics::Metrics;
use crate::triggers::webhooks::{parse_listen, same};

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
}

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
        AdminServer {
            settings,
            configured,
            runtime,
            delivery,
            metrics,
        }
    }

    /// Its routes, the token check included.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/plugins", get(plugins))
            .route("/plugins/{name}/events", post(emit))
            .route("/outbox", get(outbox))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(256 << 10))
            .layer(middleware::from_fn_with_state(self.clone(), require_token))
            .with_state(self)
    }

    /// Serves on `listener` until `stop`, within the default listen limits.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        let limits = super::ListenLimits::default();
        super::serve_http("admin", listener, self.router(), limits, stop).await;
    }
}

async fn require_token(
    State(server): State<Arc<AdminServer>>,
    request: Request,
    next: Next,
) -> Response {
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
    match dispatched.await {
        Ok(()) => axum::Json(json!({
            "ok": true,
            "ms": started.elapsed().as_secs_f64() * 1000.0,
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
                axum::Json(json!({ "ok": false, "error": e.to_string() })),
            )
                .into_response()
        }
    }
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
    let listed = tokio::task::spawn_blocking(move || outbox.list(&filter)).await;
    match listed {
        Ok(Ok(records)) => {
            let messages: Vec<Value> = records
                .into_iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "plugin": r.plugin,
                        "channel": r.channel,
                        "state": r.state.as_str(),
                        "attempts": r.attempts,
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        server.metrics.render(&server.runtime),
    )
        .into_response()
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
    let mut finished = delivery.observers().finished.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            t = throttled.recv() => match t {
                Ok(t) => metrics.throttle_wait(&t.endpoint, &t.plugin, t.waited),
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
