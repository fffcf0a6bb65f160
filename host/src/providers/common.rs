//! What the HTTP providers share: reading options, reading answers.
//!
//! Provider answers are hostile input. Every body is read to a bound, every
//! provider word that reaches a reason is escaped and cut, and no transport
//! error is printed with its URL, because a URL may carry a usersig or a
//! webhook code.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{DeliveryOutcome, unknown_keys};
use crate::config::{ConfigIssue, Secret, take_secret};
use crate::sanitize;

/// The most of a provider's answer the host reads. Real answers are a few
/// hundred bytes; anything past this is not worth the memory.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How much provider text goes into a reason.
pub const MAX_REASON_CHARS: usize = 300;

/// The longest wait a provider's `Retry-After` may ask for before the host
/// stops believing it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A provider's answer, read to a bound.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The provider's `Retry-After`, when it sent one in seconds.
    pub retry_after: Option<Duration>,
}

impl Reply {
    pub fn is_server_error(&self) -> bool {
        (500..=599).contains(&self.status)
    }

    /// Statuses that mean "later" whatever the body says.
    pub fn is_transient(&self) -> bool {
        self.is_server_error() || self.status == 429 || self.status == 408
    }

    /// A transient HTTP answer as an outcome: a 429 is the provider (or
    /// its gateway) saying "too fast", which slows the endpoint down;
    /// anything else is retried later. `reason` says what happened.
    pub fn transient(&self, reason: String) -> DeliveryOutcome {
        if self.status == 429 {
            DeliveryOutcome::Throttled {
                after: self.retry_after,
                limit: super::RateLimited::Endpoint,
                reason,
            }
        } else {
            DeliveryOutcome::RetryLater {
                after: self.retry_after,
                reason,
            }
        }
    }

    /// The start of the body, escaped, for a reason.
    pub fn snippet(&self) -> String {
        snippet(&self.body)
    }
}

/// The start of a body, escaped and cut, for a reason or a log line.
pub fn snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(MAX_REASON_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    if text.trim().is_empty() {
        return "(empty body)".into();
    }
    sanitize::for_log(text.trim(), MAX_REASON_CHARS)
}

/// Provider text (a message, a code) made safe for a reason.
pub fn provider_text(text: &str) -> String {
    sanitize::for_log(text.trim(), MAX_REASON_CHARS)
}

/// A provider's error code made safe to use as `Rejected::code`.
pub fn provider_code(code: &str) -> String {
    sanitize::for_log(code.trim(), 64)
}

/// Secrets shorter than this are not redacted: no real credential is that
/// short, and blanking them would garble ordinary words.
const MIN_SECRET_BYTES: usize = 4;

/// What a redacted secret is replaced by.
const REDACTED: &[u8] = b"[redacted]";

/// Replaces every occurrence of every secret in `text` by `[redacted]`.
///
/// A hostile provider (or anyone on the path) may echo a credential back in
/// an encoded form, so each byte of a secret is matched in any of the forms
/// a provider answer or a log escape produces, mixed freely:
/// the byte itself; `%HH` (URL encoding, either case) and `+` for a space;
/// JSON's `\uHHHH`, `\"`, `\\`, `\/`; XML/HTML character references
/// `&#NN;`, `&#xHH;` and the five named entities. Encoded forms apply to
/// ASCII bytes, which is what every credential here is made of (base64,
/// hex, letters and digits). A secret cut off by the end of `text` is
/// redacted too, once at least [`MIN_SECRET_BYTES`] of it are there.
pub fn redact(text: &[u8], secrets: &[&str]) -> Vec<u8> {
    let mut out = text.to_vec();
    for secret in secrets
        .iter()
        .map(|s| s.as_bytes())
        .filter(|s| s.len() >= MIN_SECRET_BYTES)
    {
        out = redact_one(&out, secret);
    }
    out
}

/// [`redact`] for text.
pub fn redact_text(text: &str, secrets: &[&str]) -> String {
    let bytes = redact(text.as_bytes(), secrets);
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn redact_one(text: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        // Only these bytes can start a match; skip the rest cheaply.
        let first = text[i];
        if first != secret[0] && !matches!(first, b'%' | b'+' | b'\\' | b'&') {
            out.push(first);
            i += 1;
            continue;
        }
        match match_at(text, i, secret) {
            Some(end) => {
                out.extend_from_slice(REDACTED);
                i = end;
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}

/// Where a match of `secret` starting at `start` ends (the longest one), if
/// there is one.
fn match_at(text: &[u8], start: usize, secret: &[u8]) -> Option<usize> {
    // The positions the matched prefix of `secret` may end at: encodings
    // overlap (`\\` is a backslash, or the start of `\u…`), so several.
    let mut here = vec![start];
    let mut next = Vec::new();
    for (matched, &byte) in secret.iter().enumerate() {
        next.clear();
        for &p in &here {
            if p == text.len() {
                // The text ends inside the secret: redact what is there.
                if matched >= MIN_SECRET_BYTES {
                    return Some(p);
                }
                continue;
            }
            encodings_at(text, p, byte, &mut next);
        }
        if next.is_empty() {
            return None;
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(&mut here, &mut next);
    }
    here.into_iter().max()
}

/// Pushes the end of every encoding of `byte` that starts at `text[p]`.
fn encodings_at(text: &[u8], p: usize, byte: u8, ends: &mut Vec<usize>) {
    let rest = &text[p..];
    if rest[0] == byte {
        ends.push(p + 1);
    }
    if rest[0] == b'%' && hex_value(rest.get(1..3)) == Some(u32::from(byte)) {
        ends.push(p + 3);
    }
    if byte == b' ' && rest[0] == b'+' {
        ends.push(p + 1);
    }
    if !byte.is_ascii() {
        return;
    }
    if rest[0] == b'\\' {
        if rest.get(1) == Some(&b'u') && hex_value(rest.get(2..6)) == Some(u32::from(byte)) {
            ends.push(p + 6);
        }
        if matches!(byte, b'"' | b'\\' | b'/') && rest.get(1) == Some(&byte) {
            ends.push(p + 2);
        }
    }
    if rest[0] == b'&' {
        // `&#NN;` or `&#xHH;`, at most 8 digits.
        if rest.get(1) == Some(&b'#') {
            let (digits, radix) = match rest.get(2) {
                Some(b'x' | b'X') => (3, 16),
                _ => (2, 10),
            };
            if let Some(len) = rest
                .iter()
                .skip(digits)
                .take(9)
                .position(|&b| b == b';')
                .filter(|&len| len > 0)
            {
                let value = std::str::from_utf8(&rest[digits..digits + len])
                    .ok()
                    .and_then(|d| u32::from_str_radix(d, radix).ok());
                if value == Some(u32::from(byte)) {
                    ends.push(p + digits + len + 1);
                }
            }
        }
        let named: &[u8] = match byte {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            _ => b"",
        };
        if !named.is_empty() && rest.starts_with(named) {
            ends.push(p + named.len());
        }
    }
}

/// The value of a short run of hex digits, if all of them are hex.
fn hex_value(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Removes credentials from an outcome's text, with [`redact`]. A provider
/// may echo what it was sent ("client_secret XYZ is invalid"), and reasons
/// end up in logs, the outbox and delivery reports. Answers are already
/// redacted whole, before any of their text is cut or escaped, when they
/// are read ([`read_reply`]); this is the second net, for text from
/// anywhere else.
pub fn scrub(outcome: DeliveryOutcome, secrets: &[&str]) -> DeliveryOutcome {
    let clean = |text: String| redact_text(&text, secrets);
    match outcome {
        DeliveryOutcome::Delivered { provider_ids } => DeliveryOutcome::Delivered {
            provider_ids: provider_ids.into_iter().map(clean).collect(),
        },
        DeliveryOutcome::Rejected { code, reason } => DeliveryOutcome::Rejected {
            code: clean(code),
            reason: clean(reason),
        },
        DeliveryOutcome::RetryLater { after, reason } => DeliveryOutcome::RetryLater {
            after,
            reason: clean(reason),
        },
        DeliveryOutcome::Throttled {
            after,
            limit,
            reason,
        } => DeliveryOutcome::Throttled {
            after,
            limit,
            reason: clean(reason),
        },
        DeliveryOutcome::QuotaExhausted { until, reason } => DeliveryOutcome::QuotaExhausted {
            until,
            reason: clean(reason),
        },
        DeliveryOutcome::CredentialsExpired { reason } => DeliveryOutcome::CredentialsExpired {
            reason: clean(reason),
        },
    }
}

/// Reads an answer, at most [`MAX_RESPONSE_BYTES`] of it, with every
/// `secret` the request carried redacted from the body (see [`redact`])
/// before anything reads it: whatever the provider says reaches reasons,
/// logs, the outbox and plugins only through this body.
///
/// A redirect (3xx) is an error that names the status and the host it
/// points to, never the URL: the shared client follows none, since the
/// request's credentials would go along.
pub async fn read_reply(
    what: &str,
    mut response: reqwest::Response,
    secrets: &[&str],
) -> Result<Reply, DeliveryOutcome> {
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        return Err(redirect_refused(what, &response));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                if chunk.len() >= room {
                    // The rest is dropped unread; what we have decides.
                    body.extend_from_slice(&chunk[..room]);
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(transport_failure(what, e)),
        }
    }
    Ok(Reply {
        status,
        body: redact(&body, secrets),
        retry_after,
    })
}

/// A provider's redirect, as a refusal that names the status and the host
/// `Location` points to (relative to the request's URL), and nothing else
/// of it: its path and query may carry what the request sent.
fn redirect_refused(what: &str, response: &reqwest::Response) -> DeliveryOutcome {
    let status = response.status().as_u16();
    let host = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| response.url().join(v).ok())
        .and_then(|url| url.host_str().map(|h| sanitize::for_log(h, 100)));
    let to = match host {
        Some(host) => format!("a redirect to host {host}"),
        None => "a redirect without a usable Location".into(),
    };
    DeliveryOutcome::Rejected {
        code: format!("http-{status}"),
        reason: format!(
            "{what}: HTTP {status}, {to}; botbox follows no redirects, because the request's \
             credentials would go along: set the provider's url to the address the service \
             really answers on (https://…)"
        ),
    }
}

/// A request that never got an answer: try again later. The URL is
/// stripped first, since it may carry a signature or a webhook code.
pub fn transport_failure(what: &str, error: reqwest::Error) -> DeliveryOutcome {
    DeliveryOutcome::RetryLater {
        after: None,
        reason: format!("{what}: {}", describe_transport_error(error)),
    }
}

/// A transport error as text, without its URL.
pub fn describe_transport_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut chain = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let _ = write!(chain, ": {cause}");
        source = cause.source();
    }
    sanitize::for_log(&format!("{kind}{chain}"), MAX_REASON_CHARS)
}

/// Encodes a query or form value the way Java's `URLEncoder` does (which is
/// how BigBlueButton computes checksums): letters, digits and `.-*_` stay,
/// space becomes `+`, every other UTF-8 byte becomes `%XX`.
pub fn form_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// `name=value&…` with every name and value form-encoded, in the order given.
pub fn form_query(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode(name, &mut out);
        out.push('=');
        form_encode(value, &mut out);
    }
    out
}

/// Reads a provider's or channel's options, collecting every problem so
/// the operator sees them all at once.
pub struct Options<'a> {
    table: &'a toml::Table,
    prefix: String,
    pub issues: Vec<ConfigIssue>,
}

impl<'a> Options<'a> {
    /// Starts reading `table`, whose keys are reported as `{prefix}.{key}`,
    /// refusing keys not in `known`.
    pub fn new(table: &'a toml::Table, prefix: &str, known: &[&str]) -> Options<'a> {
        Options {
            table,
            prefix: prefix.to_string(),
            issues: unknown_keys(table, known, prefix),
        }
    }

    /// Starts reading a provider account's options (`providers.NAME`):
    /// like [`Options::new`], with the keys every account has and the
    /// registry reads itself ([`ACCOUNT_KEYS`]) named as known too.
    pub fn account(table: &'a toml::Table, prefix: &str, known: &[&str]) -> Options<'a> {
        let mut all = known.to_vec();
        all.extend_from_slice(ACCOUNT_KEYS);
        Options::new(table, prefix, &all)
    }

    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.prefix)
    }

    pub fn issue(&mut self, field: &str, message: impl Into<String>) {
        let key = self.key(field);
        self.issues.push(ConfigIssue {
            key,
            message: message.into(),
        });
    }

    pub fn has(&self, field: &str) -> bool {
        self.table.contains_key(field)
    }

    /// A sub-table, such as Bitrix24's `webhook = { … }`.
    pub fn table(&mut self, field: &str) -> Option<&'a toml::Table> {
        match self.table.get(field) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                self.issue(field, "must be a table");
                None
            }
        }
    }

    /// A non-empty string, trimmed of nothing: what the operator wrote.
    pub fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.table.get(field) {
            None if required => {
                self.issue(field, "is missing");
                None
            }
            None => None,
            Some(toml::Value::String(s)) if s.trim().is_empty() => {
                self.issue(field, "must not be empty");
                None
            }
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.issue(field, "must be a string");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn integer(&mut self, field: &str, required: bool, min: i64, max: i64) -> Option<i64> {
        match self.table.get(field) {
            None if required => {
                self.issue(field, format!("is missing: an integer from {min} to {max}"));
                None
            }
            None => None,
            Some(toml::Value::Integer(n)) if (min..=max).contains(n) => Some(*n),
            Some(_) => {
                self.issue(field, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// A provider's API address as the operator copied it from the
    /// provider's console or docs, normalised by the provider's `rule` (see
    /// [`api_url`]) into the base every request is built on. Plain
    /// `http://` is refused unless the host is loopback or the provider sets
    /// `allow_plaintext = true` (see [`plaintext_refused`]).
    pub fn api_url(
        &mut self,
        field: &str,
        rule: impl FnOnce(&CopiedUrl) -> Result<String, String>,
    ) -> Option<String> {
        let raw = self.string(field, true)?;
        let checked = api_url(&raw, rule).and_then(|url| {
            match plaintext_refused(&url, self.allow_plaintext(), &self.prefix) {
                None => Ok(url),
                Some(message) => Err(message),
            }
        });
        match checked {
            Ok(url) => Some(url),
            Err(message) => {
                self.issue(field, message);
                None
            }
        }
    }

    /// The provider's `allow_plaintext` switch: false unless set to true.
    pub fn allow_plaintext(&mut self) -> bool {
        match self.table.get(ALLOW_PLAINTEXT) {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => {
                if !self
                    .issues
                    .iter()
                    .any(|i| i.key == self.key(ALLOW_PLAINTEXT))
                {
                    self.issue(ALLOW_PLAINTEXT, "must be true or false");
                }
                false
            }
        }
    }

    /// A secret reference (`{ env = … }` or `{ file = … }`).
    pub fn secret(&mut self, field: &str, required: bool, base_dir: &Path) -> Option<Secret> {
        match take_secret(self.table, field, &self.prefix, base_dir) {
            Ok(Some(secret)) => Some(secret),
            Ok(None) if required => {
                self.issue(
                    field,
                    "is missing: write { env = \"VAR\" } or { file = \"path\" }",
                );
                None
            }
            Ok(None) => None,
            Err(issue) => {
                self.issues.push(issue);
                None
            }
        }
    }
}

/// The provider key that allows plain `http://` to a host that is not
/// loopback.
pub const ALLOW_PLAINTEXT: &str = "allow_plaintext";

/// The keys of a provider account that the registry reads for every kind
/// (`providers::Registry`), so no provider lists them: the throttle override
/// and the request timeout.
pub const ACCOUNT_KEYS: &[&str] = &[super::limits::THROTTLE_KEY, super::TIMEOUT_KEY];

/// Why a checked URL may not be used, when it is plain `http://` to a host
/// other than loopback (127.0.0.0/8, ::1, `localhost`) and the provider at
/// `prefix` has not set `allow_plaintext = true`. Every provider request
/// carries a credential, readable by anyone on the path of plain HTTP.
pub fn plaintext_refused(url: &str, allowed: bool, prefix: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if url.scheme() != "http" || allowed {
        return None;
    }
    let host = url.host_str()?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| {
        format!(
            "uses plain http:// to a host that is not loopback, so the credentials every \
             request carries would cross the network readable; use https://, or, only where \
             the network path is trusted, set {ALLOW_PLAINTEXT} = true under [{prefix}]"
        )
    })
}

/// A provider URL as the operator wrote it, taken apart for the
/// provider's rule (see [`api_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedUrl {
    /// `scheme://host[:port]`: what messages may repeat.
    pub origin: String,
    /// The host alone.
    pub host: String,
    /// The path's non-empty segments, so `…/api` and `…/api/` read alike.
    /// Never repeated in a message unless the rule knows them: a path can
    /// hold a credential (a Bitrix24 webhook code).
    pub segments: Vec<String>,
}

impl CopiedUrl {
    /// The origin followed by `segments`.
    pub fn join(&self, segments: &[&str]) -> String {
        let mut url = self.origin.clone();
        for s in segments {
            url.push('/');
            url.push_str(s);
        }
        url
    }

    /// The segments, as `&str`s for matching.
    pub fn parts(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// `write url = "…"`, the line an error shows as the fix.
pub fn write_url(url: &str) -> String {
    format!("write url = \"{url}\"")
}

/// The one reading of every provider's `url`: what an operator copies from
/// a provider's console or docs, with or without the API's own path, with
/// or without a trailing slash. Checks what holds for every provider (an
/// `http(s)` address with a host, no user name or password, no query or
/// fragment), then lets the provider's `rule` map the path to the base its
/// requests are built on, or explain why the path cannot be right.
///
/// Errors name the fix (`write url = "…"`) and repeat only the scheme,
/// host and port and the path parts the rule knows: never the user info,
/// an unknown path segment, the query or the fragment, which can hold
/// credentials (a password, a webhook code, a signed query).
pub fn api_url(
    raw: &str,
    rule: impl FnOnce(&CopiedUrl) -> Result<String, String>,
) -> Result<String, String> {
    let raw = raw.trim();
    if raw.contains("://") {
        return checked_api_url(raw, rule);
    }
    // What consoles show is often the host alone (Easemob's REST host,
    // Tencent's region domain). The fix is suggested only for what looks
    // like a host name, so a secret pasted here is not repeated.
    let guess = format!("https://{raw}");
    let host = reqwest::Url::parse(&guess)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .filter(|host| looks_like_host(host));
    let fix = match host {
        None => "write it like \"https://host\"".to_string(),
        Some(host) => match checked_api_url(&guess, rule) {
            Ok(base) => write_url(&base),
            Err(_) => write_url(&format!("https://{host}")),
        },
    };
    Err(format!("has no https:// in front: {fix}"))
}

/// [`api_url`] of a URL that has a scheme.
fn checked_api_url(
    raw: &str,
    rule: impl FnOnce(&CopiedUrl) -> Result<String, String>,
) -> Result<String, String> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| format!("is not a valid URL ({e}); write it like \"https://host/path\""))?;
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => return Err("has no host; write it like \"https://host\"".into()),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "must start with https:// (or http:// for a local simulator): {}",
            write_url(&format!("https://{host}{port}"))
        ));
    }
    let copied = CopiedUrl {
        origin: format!("{}://{host}{port}", url.scheme()),
        host: host.clone(),
        segments: url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    let base = rule(&copied)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "must not carry a user name or password (they would be sent and logged with every \
             request; credentials belong in secret references): {}",
            write_url(&base)
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "must not have a query (?…) or fragment (#…): botbox builds each request's own \
             query and signs it; {}",
            write_url(&base)
        ));
    }
    Ok(base)
}

/// Whether `host` reads as a host name or address rather than a word: it
/// has a dot, is an IP address, or is `localhost`.
fn looks_like_host(host: &str) -> bool {
    host.contains('.') || host.starts_with('[') || host.eq_ignore_ascii_case("localhost")
}

/// Checks a base URL and returns it without a trailing `/`.
pub fn check_base_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| format!("is not a valid URL ({e}); write it like \"https://host/path\""))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "must start with https:// (or http:// for a local simulator), not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry a user name or password; credentials belong in secret references"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query (?…) or fragment (#…)".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Seconds since the Unix epoch, by the host clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The last path segment of a URL, for a file name when none was given.
pub fn file_name_from_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_string();
    if last.is_empty() { None } else { Some(last) }
}

/// The extension of a URL's last path segment, lowercase.
pub fn extension_from_url(url: &str) -> Option<String> {
    let name = file_name_from_url(url)?;
    let (_, ext) = name.rsplit_once('.')?;
    if ext.is_empty() || ext.len() > 8 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::test_server::{Answer, Server};

    #[test]
    fn form_encoding_follows_java_url_encoder() {
        // java.net.URLEncoder.encode(s, "UTF-8") keeps A-Za-z0-9 . - * _,
        // turns space into '+', and percent-encodes every other UTF-8 byte
        // in upper-case hex.
        let mut out = String::new();
        form_encode("Hello World! a.b-c*d_e~f'g(h)", &mut out);
        assert_eq!(out, "Hello+World%21+a.b-c*d_e%7Ef%27g%28h%29");
        let mut out = String::new();
        form_encode("événement & ünïcode/😀=?+%", &mut out);
        assert_eq!(
            out,
            "%C3%A9v%C3%A9nement+%26+%C3%BCn%C3%AFcode%2F%F0%9F%98%80%3D%3F%2B%25"
        );
        assert_eq!(
            form_query(&[("meetingID", "a b"), ("message", "x&y=z")]),
            "meetingID=a+b&message=x%26y%3Dz"
        );
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            check_base_url("https://bbb.example.edu/bigbluebutton/api/").unwrap(),
            "https://bbb.example.edu/bigbluebutton/api"
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("https://x/?a=1").is_err());
        let e = check_base_url("https://user:hunter2@x/").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(check_base_url("not a url").is_err());
    }

    #[test]
    fn snippets_are_escaped_and_bounded() {
        let hostile = format!("\x1b[2Jerror\n{}", "x".repeat(10_000));
        let s = snippet(hostile.as_bytes());
        assert!(!s.chars().any(char::is_control), "{s}");
        assert!(s.chars().count() < MAX_REASON_CHARS + 40, "{}", s.len());
        assert_eq!(snippet(b"  "), "(empty body)");
    }

    #[test]
    fn scrub_removes_echoed_credentials() {
        let o = DeliveryOutcome::CredentialsExpired {
            reason: "invalid_client: client_secret YXA6-secret-1 is wrong for YXA6-id".into(),
        };
        assert_eq!(
            scrub(o, &["YXA6-secret-1", "YXA6-id", "ab"]),
            DeliveryOutcome::CredentialsExpired {
                reason: "invalid_client: client_secret [redacted] is wrong for [redacted]".into()
            }
        );
        let o = DeliveryOutcome::Rejected {
            code: "tok3n-value".into(),
            reason: "about tok3n-value".into(),
        };
        let DeliveryOutcome::Rejected { code, reason } = scrub(o, &["tok3n-value"]) else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), reason.as_str()),
            ("[redacted]", "about [redacted]")
        );
    }

    #[test]
    fn redaction_sees_through_encodings() {
        let secret = "eJw1jU/s+cr3t==";
        // Every way an answer or a log escape may spell it, and a mix.
        let forms = [
            "eJw1jU/s+cr3t==".to_string(),
            r"eJw1jU\/s+cr3t==".to_string(),
            "eJw1jU%2Fs%2Bcr3t%3D%3D".to_string(),
            "eJw1jU%2fs%2bcr3t%3d%3d".to_string(),
            r"\u0065\u004A\u0077\u0031jU\u002fs\u002Bcr3t\u003d=".to_string(),
            "eJw1jU&#47;s&#x2B;cr3t&#61;&#x3d;".to_string(),
            r"e%4Aw\u0031jU&#x2f;s+cr3t%3d\u003D".to_string(),
        ];
        for form in &forms {
            let text = format!("before {form} after");
            let clean = redact_text(&text, &[secret]);
            assert_eq!(clean, "before [redacted] after", "{form}");
        }
        // A backslash in the secret, raw and JSON- or log-escaped.
        let backslashed = r"ab\cd\ef";
        for form in [r"ab\cd\ef", r"ab\\cd\\ef", r"ab\u005ccd\\ef"] {
            assert_eq!(redact_text(form, &[backslashed]), "[redacted]", "{form}");
        }
        // Cut off by the end of the text: what is there goes.
        assert_eq!(redact_text("x eJw1jU/", &[secret]), "x [redacted]");
        assert_eq!(redact_text("x eJw", &[secret]), "x eJw");
        // Short values and near misses are left alone.
        assert_eq!(redact_text("ab abc", &["ab"]), "ab abc");
        assert_eq!(redact_text("eJw1jU/s+cr3X==", &[secret]), "eJw1jU/s+cr3X==");
        // Non-ASCII text around a secret stays valid.
        assert_eq!(
            redact_text("é eJw1jU/s+cr3t== ü", &[secret]),
            "é [redacted] ü"
        );
    }

    #[test]
    fn plain_http_is_for_loopback_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9",
            "http://localhost:8080/x",
            "http://LOCALHOST.",
            "https://bbb.example.edu",
        ] {
            assert_eq!(plaintext_refused(url, false, "providers.p"), None, "{url}");
        }
        for url in [
            "http://bbb.example.edu",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
        ] {
            let e = plaintext_refused(url, false, "providers.p").expect(url);
            assert!(
                e.contains("allow_plaintext = true under [providers.p]"),
                "{e}"
            );
            assert_eq!(plaintext_refused(url, true, "providers.p"), None, "{url}");
        }
    }

    #[test]
    fn file_names_come_from_urls() {
        assert_eq!(
            file_name_from_url("https://x/a/b/photo.JPG?x=1").as_deref(),
            Some("photo.JPG")
        );
        assert_eq!(
            extension_from_url("https://x/a/b/photo.JPG").as_deref(),
            Some("jpg")
        );
        assert_eq!(extension_from_url("https://x/a/b/"), None);
        assert_eq!(extension_from_url("https://x/a/noext"), None);
    }

    #[tokio::test]
    async fn bodies_are_read_to_a_bound() {
        let big = "y".repeat(MAX_RESPONSE_BYTES + 5000);
        let server = Server::start(move |_| Answer {
            status: 200,
            body: big.clone(),
            delay_ms: 0,
        })
        .await;
        let response = reqwest::Client::new()
            .get(format!("{}/big", server.base))
            .send()
            .await
            .unwrap();
        let reply = read_reply("test", response, &[])
            .await
            .unwrap_or_else(|_| panic!());
        assert_eq!(reply.body.len(), MAX_RESPONSE_BYTES);
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_url() {
        // Port 9 on localhost: nothing listens, so the connect fails.
        let err = reqwest::Client::new()
            .get("http://127.0.0.1:9/rest/1/s3cr3tc0de/im.message.add.json?usersig=SIG")
            .send()
            .await
            .unwrap_err();
        let outcome = transport_failure("bitrix24", err);
        let text = format!("{outcome:?}");
        assert!(
            !text.contains("s3cr3tc0de") && !text.contains("SIG"),
            "{text}"
        );
        assert!(matches!(outcome, DeliveryOutcome::RetryLater { .. }));
    }
}
