//! Where events come from: schedules, provider webhooks (`webhooks`), the
//! admin API (`admin`, which also serves `metrics`), delivery reports, and
//! the CLI (`botbox call`, in `cli`).

pub mod admin;
pub mod metrics;
pub mod reports;
pub mod schedule;
pub mod webhooks;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// What outlives a config reload: the replay cache (so a call handled
/// before the reload is still a replay after it) and the metrics.
#[derive(Default)]
pub struct Shared {
    pub replay: Arc<webhooks::ReplayCache>,
    pub metrics: Arc<metrics::Metrics>,
}

/// Binds an address for a listener of a running host.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Starts the webhook and admin listeners a config asks for, and the
/// delivery metrics, until `stop`. A listener that cannot bind is logged
/// and left out; the rest of the host runs.
pub fn start_listeners(app: &App, stop: CancellationToken, tasks: &TaskTracker) {
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
                    &app.config,
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
