//! The web console on the admin listener: server-rendered pages over the
//! same figures as the admin API (plugins and their recent failures, the
//! outbox with retry and cancel, the endpoints' throttle windows and
//! queues, webhook refusals) and a live tail of plugin log lines.
//!
//! | route | what |
//! |---|---|
//! | `GET /console/login`, `POST /console/login` | the login form; the admin token buys a session |
//! | `POST /console/logout` | ends the session |
//! | `GET /console/plugins` | state, generation, version, grants, limits, counts, recent failures |
//! | `GET /console/outbox?state=&plugin=&channel=` | messages, newest first |
//! | `GET /console/outbox/{id}`, `POST …/retry`, `POST …/cancel` | one message; queue it again or cancel it |
//! | `GET /console/endpoints` | each throttle limit as a bar, daily quotas, queue per plugin |
//! | `GET /console/webhooks` | recent webhook refusals by provider and reason |
//! | `GET /console/logs`, `GET /console/logs/stream` | the log tail; its server-sent events |
//! | `GET /console/static/{console.css,console.js}` | embedded in the binary |
//!
//! Security: the token is asked once and exchanged for a random session id
//! in an `HttpOnly`, `SameSite=Strict`, `Path=/console` cookie (the token
//! itself is never stored in the browser); sessions end after
//! [`session::IDLE`] unused or [`session::LIFETIME`], at logout, and when
//! the config reloads (the token may have changed). Every POST but the
//! login carries the session's CSRF token. Every page is sent with a
//! `Content-Security-Policy` that allows scripts and styles from the
//! console itself only (no inline script), `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`; plugin-, provider- and caller-supplied
//! text is escaped twice over (see [`pages::shown`]).

pub mod pages;
pub mod session;
pub mod tail;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::delivery::Delivery;
use crate::delivery::store::{ListFilter, MessageState};
use crate::events::event_kind_name;
use crate::providers::inbound::same;
use crate::runtime::Runtime;
use crate::sanitize;
use crate::triggers::metrics::Metrics;

use pages::Tab;
use session::{Current, Sessions};
use tail::LogTail;

/// The policy every console answer carries: nothing from elsewhere, no
/// inline script or style, no framing, forms post to the console only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");
const ICON: &str = include_str!("static/favicon.svg");

/// The console of one host generation.
pub struct Console {
    token: Secret,
    sessions: Sessions,
    configured: Vec<String>,
    runtime: Arc<Runtime>,
    delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
    tail: Arc<LogTail>,
    closing: CancellationToken,
}

impl Console {
    /// A console over one generation, behind `token` (`admin.token`);
    /// `configured` names the config's plugins, loaded or not.
    pub fn new(
        token: Secret,
        configured: Vec<String>,
        runtime: Arc<Runtime>,
        delivery: Arc<Delivery>,
        metrics: Arc<Metrics>,
    ) -> Console {
        let tail = Arc::new(LogTail::new(runtime.services().log_observers));
        Console {
            token,
            sessions: Sessions::default(),
            configured,
            runtime,
            delivery,
            metrics,
            tail,
            closing: CancellationToken::new(),
        }
    }

    /// Keeps the recent log lines and ends the live tails at `stop`; run
    /// beside the listener.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let keep = tokio::spawn(self.tail.clone().keep_recent(stop.clone()));
        stop.cancelled().await;
        self.closing.cancel();
        let _ = keep.await;
    }

    /// The console's routes, all under `/console`, with their own session
    /// check (not the admin API's bearer token) and security headers.
    pub fn router(self: Arc<Self>) -> Router {
        let private = Router::new()
            .route(
                "/console",
                get(|| async { Redirect::to("/console/plugins") }),
            )
            .route(
                "/console/",
                get(|| async { Redirect::to("/console/plugins") }),
            )
            .route("/console/logout", post(logout))
            .route("/console/plugins", get(plugins))
            .route("/console/outbox", get(outbox))
            .route("/console/outbox/{id}", get(message))
            .route("/console/outbox/{id}/retry", post(retry))
            .route("/console/outbox/{id}/cancel", post(cancel))
            .route("/console/endpoints", get(endpoints))
            .route("/console/webhooks", get(webhooks))
            .route("/console/logs", get(logs))
            .route("/console/logs/stream", get(log_stream))
            // `route_layer`: only the console's own routes; a path nobody
            // serves stays the admin API's (401 without its token).
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                require_session,
            ));
        Router::new()
            .route("/console/login", get(login_form).post(login))
            .route(
                "/console/static/console.css",
                get(|| async { asset("text/css; charset=utf-8", CSS) }),
            )
            .route(
                "/console/static/console.js",
                get(|| async { asset("text/javascript; charset=utf-8", JS) }),
            )
            .route(
                "/console/static/favicon.svg",
                get(|| async { asset("image/svg+xml", ICON) }),
            )
            .merge(private)
            .route_layer(axum::extract::DefaultBodyLimit::max(16 << 10))
            .route_layer(middleware::from_fn(security_headers))
            .with_state(self)
    }

    fn current(&self, headers: &HeaderMap) -> Option<Current> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        self.sessions.find(session::cookie_value(cookies)?)
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Adds the security headers to every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Lets a request with a valid session through; a page asked without one
/// goes to the login form, anything else is refused.
async fn require_session(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    match console.current(request.headers()) {
        Some(current) => {
            request.extensions_mut().insert(current);
            next.run(request).await
        }
        None if request.method() == axum::http::Method::GET
            && !request.uri().path().ends_with("/stream") =>
        {
            Redirect::to("/console/login").into_response()
        }
        None => refused(
            StatusCode::FORBIDDEN,
            "Not logged in",
            "Log in to the console first.",
        ),
    }
}

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn refused(status: StatusCode, title: &str, text: &str) -> Response {
    (status, html(pages::notice(title, text))).into_response()
}

/// A POST's CSRF token, checked against the session's: the refusal to
/// answer a request without the right one with (nothing was done), if so.
fn csrf_refusal(current: &Current, form: &CsrfForm) -> Option<Response> {
    if current.csrf_matches(form.csrf.as_deref()) {
        None
    } else {
        tracing::warn!("console: refused a POST without the session's CSRF token");
        Some(refused(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is stale or did not come from the console (CSRF token missing or wrong); nothing was done. Reload the page and try again.",
        ))
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: Option<String>,
}

async fn login_form(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if console.current(&headers).is_some() {
        return Redirect::to("/console/plugins").into_response();
    }
    html(pages::login(None))
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let given = form.token.unwrap_or_default();
    if !same(given.as_bytes(), console.token.expose().as_bytes()) {
        tracing::warn!("console: refused a login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            html(pages::login(Some(
                "Wrong token: the console takes the admin token (admin.token in botbox.toml).",
            ))),
        )
            .into_response();
    }
    let current = console.sessions.open();
    tracing::info!("console: logged in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie(&current.id)),
            (header::LOCATION, "/console/plugins".to_string()),
        ],
    )
        .into_response()
}

async fn logout(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refusal) = csrf_refusal(&current, &form) {
        return refusal;
    }
    console.sessions.close(&current.id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie()),
            (header::LOCATION, "/console/login".to_string()),
        ],
    )
        .into_response()
}

async fn plugins(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let mut names = console.runtime.plugin_names();
    for name in &console.configured {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
    let rows: Vec<pages::PluginRow> = names
        .into_iter()
        .map(|name| {
            let loaded = console.runtime.plugin(&name).map(|p| {
                let g = &p.context.grants;
                let s = &p.stats;
                let mut failures = s.recent_failures.snapshot();
                failures.reverse();
                pages::LoadedPlugin {
                    generation: p.generation,
                    version: p.context.manifest.as_ref().map(|m| m.version.clone()),
                    channels: g.channels.iter().cloned().collect(),
                    events: g.events.iter().map(|e| event_kind_name(*e)).collect(),
                    schedules: g.schedules.iter().cloned().collect(),
                    limits: vec![
                        ("memory_mb", (p.limits.memory_bytes >> 20).to_string()),
                        ("deadline_ms", p.limits.deadline.as_millis().to_string()),
                        ("max_concurrency", p.limits.max_concurrency.to_string()),
                        (
                            "broadcasts_per_minute",
                            p.limits.broadcasts_per_minute.to_string(),
                        ),
                    ],
                    counts: vec![
                        ("handled", s.handled.load(Relaxed)),
                        ("failed", s.failed.load(Relaxed)),
                        ("traps", s.traps.load(Relaxed)),
                        ("timeouts", s.timeouts.load(Relaxed)),
                        ("out of memory", s.out_of_memory.load(Relaxed)),
                        ("busy", s.busy.load(Relaxed)),
                    ],
                    failures,
                }
            });
            pages::PluginRow { name, loaded }
        })
        .collect();
    html(pages::page(
        Tab::Plugins,
        &current.csrf,
        pages::plugins(&rows),
    ))
}

#[derive(serde::Deserialize)]
struct OutboxQuery {
    state: Option<String>,
    plugin: Option<String>,
    channel: Option<String>,
}

/// Longest filter value taken.
const MAX_FILTER_CHARS: usize = 200;

async fn outbox(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
    Query(q): Query<OutboxQuery>,
) -> Response {
    let nonempty = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .map(|s| s.chars().take(MAX_FILTER_CHARS).collect::<String>())
    };
    let shown = pages::OutboxFilter {
        state: q.state.clone().unwrap_or_default(),
        plugin: q.plugin.clone().unwrap_or_default(),
        channel: q.channel.clone().unwrap_or_default(),
    };
    let state = nonempty(q.state);
    let parsed = state.as_deref().map(MessageState::parse);
    let mut problem = None;
    if let Some(None) = parsed {
        problem = Some("That is not a state; showing every state.".to_string());
    }
    let filter = ListFilter {
        state: parsed.flatten(),
        plugin: nonempty(q.plugin),
        channel: nonempty(q.channel),
        limit: 200,
    };
    let store = console.delivery.outbox().clone();
    let listed = tokio::task::spawn_blocking(move || store.list_progress(&filter)).await;
    let messages = match listed {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            problem = Some(format!(
                "The outbox could not be read: {}",
                sanitize::for_log(&e.to_string(), 300)
            ));
            Vec::new()
        }
        Err(e) => {
            problem = Some(format!("The outbox could not be read: {e}"));
            Vec::new()
        }
    };
    html(pages::page(
        Tab::Outbox,
        &current.csrf,
        pages::outbox(&shown, &messages, problem.as_deref()),
    ))
}

#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

async fn message(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let store = console.delivery.outbox().clone();
    let lookup = id.clone();
    let read = tokio::task::spawn_blocking(move || {
        let record = store.get(&lookup)?;
        let parts = match &record {
            Some(_) => store.parts(&lookup)?,
            None => Vec::new(),
        };
        Ok::<_, crate::delivery::store::OutboxError>((record, parts))
    })
    .await;
    let done = match done.done.as_deref() {
        Some("retried") => Some("Queued again."),
        Some("cancelled") => Some("Cancelled."),
        _ => None,
    };
    match read {
        Ok(Ok((Some(record), parts))) => html(pages::page(
            Tab::Outbox,
            &current.csrf,
            pages::message(&record, &parts, &current.csrf, done),
        )),
        Ok(Ok((None, _))) => refused(
            StatusCode::NOT_FOUND,
            "No such message",
            &format!(
                "The outbox holds no message `{}` (it may have been pruned).",
                pages::shown(&id)
            ),
        ),
        Ok(Err(e)) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Outbox unreadable",
            &sanitize::for_log(&e.to_string(), 300),
        ),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Outbox unreadable",
            &e.to_string(),
        ),
    }
}

/// Retry or cancel, through the delivery engine's own operations (the
/// ones `botbox outbox retry` / `cancel` use on the store).
async fn act(
    console: Arc<Console>,
    current: Current,
    id: String,
    form: CsrfForm,
    retry: bool,
) -> Response {
    if let Some(refusal) = csrf_refusal(&current, &form) {
        return refusal;
    }
    let delivery = console.delivery.clone();
    let target = id.clone();
    let done = tokio::task::spawn_blocking(move || {
        if retry {
            delivery.retry(&target)
        } else {
            delivery.cancel(&target)
        }
    })
    .await;
    let shown = pages::shown(&id);
    match done {
        Ok(Ok(true)) => {
            tracing::info!(message = %sanitize::for_log(&id, 100), "console: {}", if retry { "queued a message again" } else { "cancelled a message" });
            let done = if retry { "retried" } else { "cancelled" };
            Redirect::to(&format!(
                "/console/outbox/{}?done={done}",
                pages::segment(&id)
            ))
            .into_response()
        }
        Ok(Ok(false)) if retry => refused(
            StatusCode::CONFLICT,
            "Not retried",
            &format!(
                "`{shown}` is not a failed, partial or cancelled message; only those can be queued again."
            ),
        ),
        Ok(Ok(false)) => refused(
            StatusCode::CONFLICT,
            "Not cancelled",
            &format!(
                "`{shown}` is not queued (it may be sending or already finished); only a queued message can be cancelled."
            ),
        ),
        Ok(Err(e)) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Outbox error",
            &sanitize::for_log(&e.to_string(), 300),
        ),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Outbox error",
            &e.to_string(),
        ),
    }
}

async fn retry(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    act(console, current, id, form, true).await
}

async fn cancel(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    act(console, current, id, form, false).await
}

async fn endpoints(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
) -> Response {
    use crate::delivery::store::postgres::{READY_DEADLINE, with_deadline};
    let delivery = console.delivery.clone();
    let read = tokio::task::spawn_blocking(move || {
        with_deadline(Instant::now() + READY_DEADLINE, || delivery.endpoints_now())
    })
    .await;
    match read {
        Ok(now) => html(pages::page(
            Tab::Endpoints,
            &current.csrf,
            pages::endpoints(&now),
        )),
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Endpoints unreadable",
            &e.to_string(),
        ),
    }
}

async fn webhooks(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
) -> Response {
    let refusals = console.metrics.recent_webhook_refusals();
    html(pages::page(
        Tab::Webhooks,
        &current.csrf,
        pages::webhooks(&refusals),
    ))
}

async fn logs(
    State(console): State<Arc<Console>>,
    axum::Extension(current): axum::Extension<Current>,
) -> Response {
    html(pages::page(
        Tab::Logs,
        &current.csrf,
        pages::logs(&console.tail.recent()),
    ))
}

async fn log_stream(State(console): State<Arc<Console>>) -> Response {
    match console.tail.stream(console.closing.clone()) {
        Some(sse) => sse.into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} browsers are tailing the log already; close one\n",
                tail::MAX_TAILS
            ),
        )
            .into_response(),
    }
}
