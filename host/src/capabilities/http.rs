//! Outbound HTTP: `wasi:http/outgoing-handler` behind the operator's grant.
//!
//! wasmtime-wasi-http implements the interface (resources, streams, the
//! guest's view); every request it builds reaches [`HttpHooks::send_request`],
//! and from there botbox alone decides and does the sending. Nothing here
//! uses wasmtime-wasi-http's own sender, which resolves and connects by
//! itself. The order of the checks, each counted and logged:
//!
//! 1. the plugin's request budget (`limits.http_requests_per_minute`) and
//!    in-flight cap (`limits.http_max_in_flight`);
//! 2. the authority against the grant (what the plugin asked for in
//!    `describe()` and the operator's `plugins.NAME.http` covers), the
//!    `Host` header against the authority, the scheme (`https`, or `http`
//!    to a loopback address granted by its literal when
//!    `http_plain_loopback` is on), the request's declared size;
//! 3. the name resolved **once**; every address checked against the
//!    private, loopback, link-local, multicast, metadata and other special
//!    ranges (a name that resolves into one is refused; only an address
//!    granted by its literal may be one); the connection made to the checked
//!    address itself, so an answer that changes afterwards (DNS rebinding)
//!    is never used;
//! 4. the request body counted against `limits.http_request_max_kb`, the
//!    response body against `limits.http_response_max_kb`, and the whole
//!    exchange (connect, headers, body, the connection itself) cut at
//!    `limits.http_timeout_ms` or the event's deadline, whichever is first.
//!
//! Redirects are never followed by the host (`wasi:http` hands a 3xx to the
//! guest); a guest that follows one makes a new request, which goes through
//! every check again, so a redirect to an ungranted host is refused.
//!
//! The host adds no header: only `Host`, set by wasmtime-wasi-http to the
//! granted authority. No credential, cookie or operator value is ever put
//! on a request.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::rate::TokenBucket;
use super::{Capability, PluginInfo, Setup, View};
use crate::config::http::{HostMatch, HostPattern, HttpLimits};
use crate::sanitize;

/// The `http` capability (outbound HTTP through `wasi:http`).
pub struct Http;

/// What every store of one plugin shares for outbound HTTP.
#[derive(Clone)]
pub struct HttpSlice {
    limits: HttpLimits,
    plain_loopback: bool,
    in_flight: Arc<Semaphore>,
    budget: Arc<Mutex<TokenBucket>>,
    /// Its counters, for `/metrics`; kept across reloads.
    pub stats: Arc<HttpStats>,
}

/// A plugin's outbound HTTP counters since it loaded.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests that got a response (any status).
    pub completed: AtomicU64,
    /// Requests refused by a check, before any byte left the host.
    pub refused: AtomicU64,
    /// Requests that failed on the way (connect, TLS, timeout, size cap).
    pub failed: AtomicU64,
    /// Request body bytes sent.
    pub bytes_sent: AtomicU64,
    /// Response body bytes received.
    pub bytes_received: AtomicU64,
}

impl Capability for Http {
    type Slice = HttpSlice;

    fn slice(setup: &Setup<'_>, previous: Option<&HttpSlice>) -> HttpSlice {
        let limits = setup.config.limits.http.clone();
        let fresh_budget = || {
            Arc::new(Mutex::new(TokenBucket::new(
                limits.requests_per_minute,
                f64::from(limits.requests_per_minute) / 60.0,
            )))
        };
        HttpSlice {
            // A reload with the same limits keeps the budget and the
            // in-flight count, so reloading is no way around them.
            budget: match previous {
                Some(p) if setup.same_limits => p.budget.clone(),
                _ => fresh_budget(),
            },
            in_flight: match previous {
                Some(p) if setup.same_limits => p.in_flight.clone(),
                _ => Arc::new(Semaphore::new(limits.max_in_flight as usize)),
            },
            stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
            plain_loopback: setup.config.http_plain_loopback,
            limits,
        }
    }

    /// `wasi:http` is typed over the store's `WasiHttpView`, not over a
    /// capability view, so the runtime adds it
    /// ([`wasmtime_wasi_http::p2::add_only_http_to_linker_async`]) and lends
    /// each store [`HttpHooks`] built by [`hooks`].
    fn add_to_linker<T: View<Self>>(_linker: &mut Linker<T>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The hooks of one store: who is calling, what it was granted, and when
/// the event's deadline falls.
pub struct HttpHooks {
    plugin: Arc<str>,
    grants: Arc<[HostPattern]>,
    slice: HttpSlice,
    deadline: tokio::time::Instant,
}

/// The hooks for one call of `plugin`, which began at `started`.
pub fn hooks(plugin: &PluginInfo, slice: &HttpSlice, started: Instant) -> HttpHooks {
    HttpHooks {
        plugin: plugin.name.as_str().into(),
        grants: plugin.grants.http.clone().into(),
        slice: slice.clone(),
        deadline: tokio::time::Instant::from_std(started + plugin.limits.deadline),
    }
}

/// Why a request was refused or cut: the log's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Budget,
    InFlight,
    NotGranted,
    Scheme,
    HostHeader,
    RequestTooLarge,
    Address,
    Resolve,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Budget => "refused: requests_per_minute budget used up",
            Refusal::InFlight => "refused: http_max_in_flight requests already running",
            Refusal::NotGranted => "refused: host not granted",
            Refusal::Scheme => {
                "refused: only https (or http to a granted loopback address with http_plain_loopback)"
            }
            Refusal::HostHeader => "refused: Host header names another host",
            Refusal::RequestTooLarge => "refused: request body over http_request_max_kb",
            Refusal::Address => {
                "refused: address in a private, loopback, link-local, multicast or metadata range"
            }
            Refusal::Resolve => "refused: the name does not resolve",
        }
    }

    fn error(self) -> Error {
        match self {
            Refusal::Budget | Refusal::InFlight => Error::ConnectionLimitReached,
            Refusal::NotGranted | Refusal::Scheme | Refusal::HostHeader => Error::HttpRequestDenied,
            Refusal::RequestTooLarge => Error::HttpRequestBodySize(None),
            Refusal::Address => Error::DestinationIpProhibited,
            Refusal::Resolve => Error::DestinationNotFound,
        }
    }
}

/// What the log line of one request says. Never the path or the query
/// string: they may carry the plugin's own keys or users' words.
struct RequestLog {
    plugin: Arc<str>,
    method: String,
    host: String,
    started: Instant,
    stats: Arc<HttpStats>,
}

impl RequestLog {
    fn refused(&self, why: Refusal) -> Error {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            plugin = %self.plugin,
            method = %self.method,
            host = %self.host,
            "outbound http {}",
            why.as_str()
        );
        why.error()
    }

    fn failed(&self, error: Error) -> Error {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            plugin = %self.plugin,
            method = %self.method,
            host = %self.host,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "outbound http failed: {}",
            sanitize::for_log(&error.to_string(), 200)
        );
        error
    }
}

impl WasiHttpHooks for HttpHooks {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTPS || *scheme == Scheme::HTTP
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let admitted = self.admit(&request);
        let limits = self.slice.limits.clone();
        let deadline = request_deadline(self.deadline, limits.timeout);
        Box::new(async move {
            let (target, log, permit) = admitted?;
            send(request, target, log, permit, &limits, deadline).await
        })
    }
}

/// Where an admitted request goes.
struct Target {
    host: String,
    port: u16,
    tls: bool,
    /// Granted by its IP literal: the only way to reach a special address.
    literal: Option<IpAddr>,
}

impl HttpHooks {
    /// The checks that need no network: budget, in-flight cap, grant,
    /// `Host` header, scheme, declared size.
    fn admit(
        &mut self,
        request: &http::Request<WasiBody>,
    ) -> Result<(Target, RequestLog, OwnedSemaphorePermit), Error> {
        let uri = request.uri();
        let raw_host = uri.host().unwrap_or("");
        let host = raw_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let log = RequestLog {
            plugin: self.plugin.clone(),
            method: sanitize::for_log(request.method().as_str(), 16),
            host: sanitize::for_log(&host, 256),
            started: Instant::now(),
            stats: self.slice.stats.clone(),
        };
        let taken = self
            .slice
            .budget
            .lock()
            .map(|mut b| b.take(Instant::now()).is_ok())
            .unwrap_or(false);
        if !taken {
            return Err(log.refused(Refusal::Budget));
        }
        let Ok(permit) = self.slice.in_flight.clone().try_acquire_owned() else {
            return Err(log.refused(Refusal::InFlight));
        };
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(log.refused(Refusal::Scheme)),
        };
        let default_port = if tls { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let Some(grant) = self
            .grants
            .iter()
            .find(|g| g.matches(&host, port, default_port))
        else {
            return Err(log.refused(Refusal::NotGranted));
        };
        let literal = match grant.host {
            HostMatch::Ip(ip) => Some(ip),
            _ => None,
        };
        let plain_allowed = self.slice.plain_loopback && literal.is_some_and(|ip| ip.is_loopback());
        if !tls && !plain_allowed {
            return Err(log.refused(Refusal::Scheme));
        }
        // wasmtime-wasi-http sets `Host` to the authority and forbids the
        // guest's own; this holds even if either changes.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        for value in request.headers().get_all(http::header::HOST) {
            if value.as_bytes() != authority.as_bytes() {
                return Err(log.refused(Refusal::HostHeader));
            }
        }
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.slice.limits.request_max_bytes) {
            return Err(log.refused(Refusal::RequestTooLarge));
        }
        Ok((
            Target {
                host,
                port,
                tls,
                literal,
            },
            log,
            permit,
        ))
    }
}

/// Whether an address is one a plugin may reach only when the operator
/// granted it by its literal: loopback, private (RFC 1918, unique local),
/// link-local (which holds the cloud metadata service 169.254.169.254),
/// carrier-grade NAT, multicast, broadcast, unspecified, documentation and
/// benchmarking ranges, the AWS IPv6 metadata address `fd00:ec2::254`
/// (unique local), and IPv4 mapped or translated into IPv6.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local (fd00:ec2::254 among them)
                || (s[0] & 0xfe00) == 0xfc00
                // fe80::/10 link-local
                || (s[0] & 0xffc0) == 0xfe80
                // 64:ff9b::/96 and 64:ff9b:1::/48 NAT64: an IPv4 inside
                || (s[0] == 0x64 && s[1] == 0xff9b)
                // 2001:db8::/32 documentation
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // ::/96 IPv4-compatible (deprecated)
                || (s[0..6] == [0; 6])
                // 2002::/16 6to4: an IPv4 inside
                || s[0] == 0x2002
        }
    }
}

fn is_special_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        // 0.0.0.0/8 "this network"
        || o[0] == 0
        // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 192.0.0.0/24 protocol assignments
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        // 198.18.0.0/15 benchmarking
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        // 240.0.0.0/4 reserved
        || o[0] >= 240
}

/// The most addresses of one name tried.
const MAX_ADDRESSES: usize = 8;

async fn send(
    mut request: http::Request<WasiBody>,
    target: Target,
    log: RequestLog,
    permit: OwnedSemaphorePermit,
    limits: &HttpLimits,
    deadline: tokio::time::Instant,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    // Resolve once; connect only to what was checked.
    let addresses: Vec<SocketAddr> = match target.literal {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => {
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(found)) => found.take(MAX_ADDRESSES).collect(),
                Ok(Err(_)) => return Err(log.refused(Refusal::Resolve)),
                Err(_) => return Err(log.failed(Error::DnsTimeout)),
            }
        }
    };
    if addresses.is_empty() {
        return Err(log.refused(Refusal::Resolve));
    }
    // A name is refused if any of its addresses is special: an answer that
    // mixes a public and a private address is an attack, not a fallback.
    if target.literal.is_none() && addresses.iter().any(|a| is_special(a.ip())) {
        return Err(log.refused(Refusal::Address));
    }
    let mut stream = None;
    for address in &addresses {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(_)) => continue,
            Err(_) => return Err(log.failed(Error::ConnectionTimeout)),
        }
    }
    let Some(stream) = stream else {
        return Err(log.failed(Error::ConnectionRefused));
    };
    let io: Box<dyn Stream> = if target.tls {
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let name = match target.literal {
            Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            None => match rustls::pki_types::ServerName::try_from(target.host.clone()) {
                Ok(n) => n,
                Err(_) => return Err(log.refused(Refusal::NotGranted)),
            },
        };
        match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => return Err(log.failed(Error::Tls(e))),
            Err(_) => return Err(log.failed(Error::ConnectionTimeout)),
        }
    } else {
        Box::new(stream)
    };
    let handshake = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(io));
    let (mut sender, connection) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(log.failed(Error::from(e))),
        Err(_) => return Err(log.failed(Error::ConnectionTimeout)),
    };
    // The connection lives at most until the deadline: a server that holds
    // it open (slowloris) loses it then, and the body's reader gets an error.
    let connection = tokio::spawn(async move {
        match tokio::time::timeout_at(deadline, connection).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_) => Err(Error::HttpResponseTimeout),
        }
    });
    // The request line carries the path only (not a proxy request).
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = match http::Uri::builder().path_and_query(path).build() {
        Ok(uri) => uri,
        Err(_) => return Err(log.refused(Refusal::NotGranted)),
    };
    let request = request.map(|body| {
        CappedRequest {
            inner: body,
            left: limits.request_max_bytes,
            stats: log.stats.clone(),
        }
        .boxed_unsync()
    });
    let response = match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(log.failed(Error::from(e))),
        Err(_) => return Err(log.failed(Error::ConnectionReadTimeout)),
    };
    let status = response.status().as_u16();
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.response_max_bytes) {
        return Err(log.failed(Error::HttpResponseBodySize(declared)));
    }
    log.stats.completed.fetch_add(1, Ordering::Relaxed);
    let response = response.map(|incoming| {
        CappedResponse {
            inner: incoming,
            left: limits.response_max_bytes,
            limit: limits.response_max_bytes,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            status,
            log,
            _permit: permit,
            done: false,
        }
        .boxed_unsync()
    });
    let io = Box::new(async move {
        connection
            .await
            .unwrap_or_else(|e| Err(Error::InternalError(Some(e.to_string()))))
    });
    Ok((
        response,
        io as Box<dyn Future<Output = Result<(), Error>> + Send>,
    ))
}

/// A TLS or plain TCP stream.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The Mozilla roots (webpki-roots, as the providers' client), ring.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            Arc::new(config.unwrap_or_else(|e| {
                // ring supports the default versions; this cannot fail with it.
                unreachable!("rustls with ring refused its defaults: {e}")
            }))
        })
        .clone()
}

/// The request body, cut at `limits.http_request_max_kb`.
struct CappedRequest {
    inner: WasiBody,
    left: u64,
    stats: Arc<HttpStats>,
}

impl Body for CappedRequest {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let n = data.len() as u64;
            if n > self.left {
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(None))));
            }
            self.left -= n;
            self.stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body, cut at `limits.http_response_max_kb` and at the
/// deadline; it holds the in-flight permit until it is dropped, and logs
/// the request then.
struct CappedResponse {
    inner: hyper::body::Incoming,
    left: u64,
    limit: u64,
    received: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    status: u16,
    log: RequestLog,
    _permit: OwnedSemaphorePermit,
    done: bool,
}

impl Body for CappedResponse {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match frame {
            None => {
                self.done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.done = true;
                // The connection task closes the connection at the same
                // deadline; say why it ended rather than how.
                if self.deadline.is_elapsed() {
                    return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
                }
                Poll::Ready(Some(Err(Error::from(e))))
            }
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    let n = data.len() as u64;
                    self.received += n;
                    self.log
                        .stats
                        .bytes_received
                        .fetch_add(n, Ordering::Relaxed);
                    if n > self.left {
                        self.done = true;
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(f)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CappedResponse {
    fn drop(&mut self) {
        let cut = if self.received > self.limit {
            " (cut at http_response_max_kb)"
        } else if self.deadline.is_elapsed() {
            " (cut at the deadline)"
        } else {
            ""
        };
        tracing::info!(
            plugin = %self.log.plugin,
            method = %self.log.method,
            host = %self.log.host,
            status = self.status,
            bytes = self.received,
            duration_ms = self.log.started.elapsed().as_millis() as u64,
            "outbound http{cut}"
        );
    }
}

/// Appends the outbound HTTP counters of `plugins` (name, stats) to a
/// Prometheus text page.
pub fn render_metrics<'a>(
    out: &mut String,
    plugins: impl Iterator<Item = (&'a str, &'a HttpStats)> + Clone,
) {
    let requests = "botbox_http_requests_total";
    let _ = writeln!(
        out,
        "# HELP {requests} Outbound HTTP requests by outcome (completed, refused, failed).\n# TYPE {requests} counter"
    );
    for (name, s) in plugins.clone() {
        let plugin = escape(name);
        for (outcome, n) in [
            ("completed", &s.completed),
            ("refused", &s.refused),
            ("failed", &s.failed),
        ] {
            let _ = writeln!(
                out,
                "{requests}{{plugin=\"{plugin}\",outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    let bytes = "botbox_http_bytes_total";
    let _ = writeln!(
        out,
        "# HELP {bytes} Outbound HTTP body bytes by direction.\n# TYPE {bytes} counter"
    );
    for (name, s) in plugins {
        let plugin = escape(name);
        for (direction, n) in [("sent", &s.bytes_sent), ("received", &s.bytes_received)] {
            let _ = writeln!(
                out,
                "{bytes}{{plugin=\"{plugin}\",direction=\"{direction}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// When a request made now must be over: after the configured timeout,
/// never past the event's deadline.
fn request_deadline(
    event_deadline: tokio::time::Instant,
    timeout: Duration,
) -> tokio::time::Instant {
    event_deadline.min(tokio::time::Instant::now() + timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_refused_and_public_addresses_are_not() {
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(is_special(special.parse().unwrap()), "{special}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(!is_special(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_request_never_outlives_the_event() {
        let now = tokio::time::Instant::now();
        let soon = now + Duration::from_millis(200);
        assert_eq!(request_deadline(soon, Duration::from_secs(5)), soon);
        let late = now + Duration::from_secs(60);
        assert!(request_deadline(late, Duration::from_secs(5)) < late);
    }
}
