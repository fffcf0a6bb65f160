//! Outbound HTTP (feature `http`, botbox:bot@0.2.0): GET and POST through
//! the standard `wasi:http/outgoing-handler`.
//!
//! A typed wrapper over the bindings wit-bindgen generates for the SDK's
//! world, rather than a client crate such as `wstd` or `waki`: those target
//! `wasm32-wasip2` and bring their own wit-bindgen and `wasi` bindings, while
//! SDK plugins build for `wasm32-unknown-unknown` with wit-bindgen 0.60 (the
//! release whose component-type section the xtask's encoder reads), and
//! neither crate was available to the offline build machines.
//!
//! The host decides what may be reached: ask for hosts with
//! [`Manifest::http`](crate::Manifest::http); the operator grants them under
//! `plugins.NAME.http`. Every other request fails with
//! [`HttpError::Refused`] before a connection is made. Redirects are not
//! followed: a 3xx is returned like any other answer.

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// The most of a response body [`get`] and [`post`] keep; the rest is
/// discarded unread so a huge answer cannot exhaust the plugin's memory
/// (the host also cuts responses at its `limits.http_response_max_kb`).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// `wasi:io` streams write at most 4096 bytes per blocking call.
const WRITE_CHUNK: usize = 4096;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HttpError {
    /// The URL is not `http://` or `https://` followed by a host.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The host refused it: the host is not granted, plain `http` to a
    /// non-loopback address, an address in a private range, the request
    /// budget or in-flight cap reached, or the body too large.
    #[error("refused by botbox: {0}")]
    Refused(&'static str),
    /// The request was sent (or tried) and failed: DNS, connection, timeout,
    /// a response over the host's size cap.
    #[error("request failed: {0}")]
    Failed(String),
}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        // The codes the host's checks answer with (README "Outbound HTTP").
        match code {
            ErrorCode::HttpRequestDenied => {
                Self::Refused("host not granted (plugins.NAME.http), or plain http")
            }
            ErrorCode::DestinationIpProhibited => {
                Self::Refused("address in a private, loopback or metadata range")
            }
            ErrorCode::ConnectionLimitReached => {
                Self::Refused("request budget or in-flight cap reached")
            }
            ErrorCode::HttpRequestBodySize(_) => Self::Refused("request body too large"),
            ErrorCode::DestinationNotFound => Self::Failed("the name does not resolve".into()),
            ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
                Self::Failed("timed out".into())
            }
            ErrorCode::HttpResponseBodySize(_) => Self::Failed("response too large".into()),
            other => Self::Failed(format!("{other:?}")),
        }
    }
}

/// An answer: its status, headers and (up to [`MAX_BODY_BYTES`] of) body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The status code, such as 200.
    pub status: u16,
    /// The headers as sent, names lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, cut at [`MAX_BODY_BYTES`].
    pub body: Vec<u8>,
    /// Whether the body was longer than [`MAX_BODY_BYTES`].
    pub truncated: bool,
    /// From sending the request to the end of the body, by the host's
    /// monotonic clock.
    pub elapsed_ms: u64,
}

impl Response {
    /// The first header of this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(Method::Get, url, &[], None)
}

/// `POST url` with this body and `content-type`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Response, HttpError> {
    send(
        Method::Post,
        url,
        &[("content-type".to_owned(), content_type.as_bytes().to_vec())],
        Some(body),
    )
}

/// A URL split the way `wasi:http` wants it.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: &'a str,
}

/// Split `http(s)://authority/path?query` (a fragment is dropped). The host
/// checks the authority against the grant; this only refuses what is not a
/// URL at all.
fn parse(url: &str) -> Result<Target<'_>, HttpError> {
    let invalid = || HttpError::InvalidUrl(url.chars().take(200).collect());
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(invalid());
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty()
        || authority.contains('@')
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    Ok(Target {
        https,
        authority,
        path_with_query: if path.is_empty() { "/" } else { path },
    })
}

fn send(
    method: Method,
    url: &str,
    headers: &[(String, Vec<u8>)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let target = parse(url)?;
    let invalid = || HttpError::InvalidUrl(url.chars().take(200).collect());
    let fields = Fields::from_list(headers).map_err(|e| HttpError::Failed(format!("{e:?}")))?;
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| invalid())?;
    let scheme = if target.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
    request
        .set_authority(Some(target.authority))
        .map_err(|()| invalid())?;
    request
        .set_path_with_query(Some(target.path_with_query))
        .map_err(|()| invalid())?;
    let outgoing_body = request
        .body()
        .map_err(|()| HttpError::Failed("the request body was already taken".into()))?;

    let started = monotonic_clock::now();
    // Send first, then stream the body: the host reads it while sending.
    let future = outgoing_handler::handle(request, None)?;
    if let Some(body) = body {
        let stream = outgoing_body
            .write()
            .map_err(|()| HttpError::Failed("the request body stream was already taken".into()))?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Failed(format!("writing the body: {e:?}")))?;
        }
        // The stream is a child of the body: it must go before `finish`.
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None)?;

    let response = loop {
        match future.get() {
            Some(Ok(result)) => break result?,
            Some(Err(())) => return Err(HttpError::Failed("response already taken".into())),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Failed("response body already taken".into()))?;
    let (body, truncated) = read_body(&incoming)?;
    drop(incoming);
    let elapsed_ms = monotonic_clock::now().saturating_sub(started) / 1_000_000;
    Ok(Response {
        status,
        headers,
        body,
        truncated,
        elapsed_ms,
    })
}

/// The longest error text kept from the host's debug string of a stream
/// error.
const MAX_ERROR_CHARS: usize = 200;

/// The first line of a host's debug string, at most [`MAX_ERROR_CHARS`]:
/// wasmtime-wasi formats a stream error with `{:?}`, which under
/// `RUST_BACKTRACE=1` in the host's environment goes on with the host's
/// whole stack trace (45,000 characters for a cut body), more than any
/// chat message takes.
fn first_line(debug: &str) -> String {
    debug
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_ERROR_CHARS)
        .collect()
}

/// Read the body to its end, keeping at most [`MAX_BODY_BYTES`].
fn read_body(incoming: &IncomingBody) -> Result<(Vec<u8>, bool), HttpError> {
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Failed("response body stream already taken".into()))?;
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                let room = MAX_BODY_BYTES - body.len();
                if chunk.len() > room {
                    truncated = true;
                }
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Failed(format!(
                    "reading the body: {}",
                    first_line(&e.to_debug_string())
                )));
            }
        }
    }
    Ok((body, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_error_is_cut_to_its_first_line() {
        let long = format!(
            "body timed out\n\nStack backtrace:\n{}",
            "  0: x\n".repeat(5000)
        );
        assert_eq!(first_line(&long), "body timed out");
        assert_eq!(first_line(&"e".repeat(1000)).len(), MAX_ERROR_CHARS);
        assert_eq!(first_line(""), "");
    }

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            parse("https://example.com/a/b?c=d#frag"),
            Ok(Target {
                https: true,
                authority: "example.com",
                path_with_query: "/a/b?c=d",
            })
        );
        assert_eq!(
            parse("http://127.0.0.1:8080"),
            Ok(Target {
                https: false,
                authority: "127.0.0.1:8080",
                path_with_query: "/",
            })
        );
        assert_eq!(parse("https://h?q").map(|t| t.path_with_query), Ok("?q"));
    }

    #[test]
    fn non_urls_are_refused_before_the_host_sees_them() {
        for bad in [
            "ftp://x",
            "example.com",
            "https://",
            "https:///path",
            "https://user@host/",
            "https://a b/",
        ] {
            assert!(matches!(parse(bad), Err(HttpError::InvalidUrl(_))), "{bad}");
        }
    }

    #[test]
    fn the_hosts_refusals_read_as_refusals() {
        assert!(matches!(
            HttpError::from(ErrorCode::HttpRequestDenied),
            HttpError::Refused(_)
        ));
        assert!(matches!(
            HttpError::from(ErrorCode::DestinationIpProhibited),
            HttpError::Refused(_)
        ));
        assert!(matches!(
            HttpError::from(ErrorCode::ConnectionRefused),
            HttpError::Failed(_)
        ));
    }
}
