//! The HTTP plumbing shared by the simulators: the accept loop, the
//! per-connection handle that lets a fault close a connection without an
//! answer, fault application and request recording.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::unix_ms;
use crate::fault::Fault;
use crate::record::{Outcome, SimRequest};
use crate::{Shared, SimProvider};

/// Lets a handler end its connection without writing a response, which axum
/// alone cannot do: the connection task drops the connection when notified.
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<Notify>);

impl ConnHandle {
    /// Closes the connection; the returned future never completes, so no
    /// response can slip out before the socket is dropped.
    pub(crate) async fn abort(&self) -> Response {
        self.0.notify_one();
        std::future::pending::<Response>().await
    }
}

pub(crate) async fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let conns = tracker.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve_conn(stream, router.clone(), cancel.clone()));
                    }
                    Err(e) => {
                        // Running out of descriptors must not spin the loop.
                        tracing::warn!(target: "botbox_sim", "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
    });
}

async fn serve_conn(stream: TcpStream, router: Router, cancel: CancellationToken) {
    let kill = Arc::new(Notify::new());
    let handle = ConnHandle(kill.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let mut builder = http1::Builder::new();
    // Without a header deadline a client that opens a socket and says nothing
    // would hold a task forever.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        () = kill.notified() => {}
        () = cancel.cancelled() => {}
    }
}

/// A provider handler's answer and how to record it.
pub(crate) struct Handled {
    pub(crate) response: Response,
    pub(crate) outcome: Outcome,
}

impl Handled {
    pub(crate) fn ok(response: Response) -> Self {
        Handled {
            response,
            outcome: Outcome::Ok,
        }
    }
    pub(crate) fn delivered(response: Response) -> Self {
        Handled {
            response,
            outcome: Outcome::Delivered,
        }
    }
    pub(crate) fn rejected(response: Response, code: impl Into<String>) -> Self {
        let status = response.status().as_u16();
        Handled {
            response,
            outcome: Outcome::Rejected {
                status,
                code: code.into(),
            },
        }
    }
}

/// The parts of a request that are recorded; `path` must already be redacted.
pub(crate) struct ReqInfo {
    pub(crate) provider: SimProvider,
    pub(crate) endpoint: String,
    pub(crate) method: String,
    pub(crate) path: String,
}

/// Runs `work` under whatever fault is pending for this endpoint and records
/// the request. Fault durations are real time: they exercise client timeouts,
/// which are real.
pub(crate) async fn guarded<Fut>(
    shared: &Shared,
    info: ReqInfo,
    conn: Option<ConnHandle>,
    rate_limited: fn() -> Response,
    work: impl FnOnce() -> Fut,
) -> Response
where
    Fut: Future<Output = Handled>,
{
    let at = shared.clock.now();
    let unix = unix_ms();
    let fault = shared.faults.take(info.provider, &info.endpoint);
    let record = |outcome: Outcome, fault: Option<Fault>| {
        shared.records.request(SimRequest {
            seq: 0,
            provider: info.provider,
            endpoint: info.endpoint.clone(),
            method: info.method.clone(),
            path: info.path.clone(),
            outcome,
            fault,
            at,
            unix_ms: unix,
        });
    };
    let Some(fault) = fault else {
        let handled = work().await;
        record(handled.outcome, None);
        return handled.response;
    };
    tracing::info!(
        target: "botbox_sim",
        "{:<8} injected fault {:?} on {}",
        info.provider.as_str(),
        fault,
        crate::record::escape_for_log(&info.endpoint, 80)
    );
    if fault.processes() {
        let handled = work().await;
        record(handled.outcome, Some(fault.clone()));
        return match fault {
            Fault::Slow { delay } => {
                tokio::time::sleep(delay).await;
                handled.response
            }
            _ => abort(conn).await,
        };
    }
    record(Outcome::Faulted, Some(fault.clone()));
    match fault {
        Fault::ServerError { status } => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(
                status,
                format!(
                    "{} {} (injected by botbox-sim)\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Server Error")
                ),
            )
        }
        Fault::Hang { duration } => {
            tokio::time::sleep(duration).await;
            abort(conn).await
        }
        Fault::RateLimited => rate_limited(),
        Fault::ErrorAnswer {
            code,
            status,
            description,
        } => (crate::kind::kind(info.provider).error_answer)(
            &code,
            status,
            description.as_deref().unwrap_or("injected by botbox-sim"),
        ),
        Fault::Drop | Fault::Slow { .. } | Fault::LostResponse => abort(conn).await,
    }
}

async fn abort(conn: Option<ConnHandle>) -> Response {
    match conn {
        Some(c) => c.abort().await,
        // Only reachable if a router is served outside `serve_conn`.
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "no connection handle\n"),
    }
}

/// Reads a request body, refusing more than `limit` bytes (requests are hostile).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| BodyError)
}

/// The body was too large or broke off.
#[derive(Debug)]
pub(crate) struct BodyError;

pub(crate) fn json(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml;charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}
