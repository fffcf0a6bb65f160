//! Where events come from: schedules, provider webhooks (`webhooks`), the
//! admin API (`admin`, which also serves `metrics`), delivery reports, and
//! `botbox call` / `botbox dev` (through `crate::app::supervisor`).
//! Triggers know the pieces of a running host they serve ([`Host`]), not
//! the app that puts them together.

pub mod admin;
pub mod console;
pub mod metrics;
pub mod reports;
pub mod schedule;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::runtime::Runtime;

/// What outlives a config reload: the replay cache (so a call handled
/// before the reload is still a replay after it) and the metrics.
#[derive(Default)]
pub struct Shared {
    /// The webhook calls already handled, to refuse a replay.
    pub replay: Arc<webhooks::ReplayCache>,
    /// The inbound, reload and delivery counters `/metrics` serves.
    pub metrics: Arc<metrics::Metrics>,
}

/// Binds an address for a listener of a running host.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// How long a stopping listener waits for the calls in flight before it
/// closes their connections.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// What a listener facing the network allows each client.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// The request headers must arrive within this (hyper's
    /// `header_read_timeout`, which also closes idle keep-alive
    /// connections); handlers bound their body reads the same way.
    pub read_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// After `stop`, connections still open are closed this much later.
    pub shutdown_deadline: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            read_timeout: Duration::from_secs(webhooks::DEFAULT_READ_TIMEOUT_S),
            max_connections: webhooks::DEFAULT_MAX_CONNECTIONS as usize,
            shutdown_deadline: SHUTDOWN_DEADLINE,
        }
    }
}

/// How many clients over the cap are answered 503 at once (each for at
/// most a second); more are closed without an answer.
const BUSY_ANSWERS_AT_ONCE: usize = 64;

/// What a client over the connection cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n";

/// Serves `app` over HTTP/1.1 on `listener` until `stop`, within `limits`:
/// a client that does not send its headers in time is cut off, one past
/// the connection cap is answered 503 at once, and after `stop` the calls
/// in flight get `shutdown_deadline` to finish before their connections are
/// closed. `axum::serve` has none of these bounds (it waits for every
/// connection, however slow), hence hyper's own connection builder, as
/// hyper's and axum's `serve-with-hyper` example do.
pub async fn serve_http(
    name: &'static str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ListenLimits,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower_service::Service;

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let busy_permits = Arc::new(tokio::sync::Semaphore::new(BUSY_ANSWERS_AT_ONCE));
    let busy_log = webhooks::RefusalLog::new(3, webhooks::REFUSAL_LOG_WINDOW);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                busy_log.refused(name, || {
                    tracing::warn!("{name}: cannot accept a connection: {e}")
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            busy_log.refused(name, || {
                tracing::warn!(
                    "{name}: connection refused: {} already open (the cap)",
                    limits.max_connections
                )
            });
            // Answer 503 and read what the client already sent (a little,
            // briefly), so closing does not reset the connection before the
            // answer is read. A few such answers at a time; past that the
            // connection is just closed.
            if let Ok(busy) = busy_permits.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _busy = busy;
                    let mut stream = stream;
                    if stream.write_all(BUSY).await.is_err() {
                        return;
                    }
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let mut left = 64 << 10;
                        while left > 0 {
                            match stream.read(&mut sink).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => left -= n.min(left),
                            }
                        }
                    })
                    .await;
                });
            }
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let mut app = app.clone();
                async move { app.call(request).await }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{name}: {} connection(s) still open {} s after stop; closed",
            connections.len(),
            limits.shutdown_deadline.as_secs()
        );
        connections.shutdown().await;
    }
    busy_log.flush(name);
}

/// What the listeners serve: the parts of one generation of a running host
/// (`crate::app` puts them together; triggers do not know the app).
pub struct Host<'a> {
    /// The config in force.
    pub config: &'a Config,
    /// The runtime the calls are dispatched to.
    pub runtime: &'a Arc<Runtime>,
    /// The delivery engine the admin API and the metrics look at.
    pub delivery: &'a Arc<Delivery>,
    /// `[webhooks]` and the providers' `inbound` sections, when set.
    pub webhooks: &'a Option<webhooks::WebhookSettings>,
    /// `[admin]`, when set.
    pub admin: &'a Option<admin::AdminSettings>,
    /// The replay cache and metrics, shared by every generation.
    pub shared: &'a Shared,
}

/// Starts the webhook and admin listeners a config asks for, and the
/// delivery metrics, until `stop`. A listener that cannot bind is logged
/// and left out; the rest of the host runs.
pub fn start_listeners(app: Host<'_>, stop: CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(admin::observe_delivery(
        app.delivery.clone(),
        Arc::new(app.config.clone()),
        app.shared.metrics.clone(),
        stop.clone(),
    ));
    if let Some(settings) = &app.webhooks {
        match bind(settings.listen) {
            Ok(listener) => {
                tracing::info!(listen = %settings.listen, "webhooks: listening on /webhooks/{{provider}}");
                let server = Arc::new(webhooks::WebhookServer::new(
                    settings.clone(),
                    app.config,
                    app.runtime.clone(),
                    app.shared.replay.clone(),
                    app.shared.metrics.clone(),
                ));
                tasks.spawn(server.serve(listener, stop.clone()));
            }
            Err(e) => tracing::error!(listen = %settings.listen, "webhooks: cannot listen: {e}"),
        }
    }
    if let Some(settings) = &app.admin {
        match bind(settings.listen) {
            Ok(listener) => {
                tracing::info!(listen = %settings.listen, "admin API and /metrics listening");
                let server = Arc::new(admin::AdminServer::new(
                    settings.clone(),
                    app.config.plugins.keys().cloned().collect(),
                    app.runtime.clone(),
                    app.delivery.clone(),
                    app.shared.metrics.clone(),
                ));
                tasks.spawn(server.serve(listener, stop));
            }
            Err(e) => tracing::error!(listen = %settings.listen, "admin: cannot listen: {e}"),
        }
    }
}

/// The request's `traceparent` header, when it is one readable value.
pub(crate) fn traceparent_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(crate::telemetry::TRACEPARENT).iter();
    let first = values.next()?;
    // Two traceparents are no traceparent (W3C Trace Context, 3.2.1).
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}
