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

/// Removes credentials from an outcome's text. A provider may echo what it
/// was sent ("client_secret XYZ is invalid"), and reasons end up in logs,
/// the outbox and delivery reports. Values shorter than 4 bytes are left
/// alone: no real credential is that short, and blanking them would garble
/// ordinary words.
pub fn scrub(outcome: DeliveryOutcome, secrets: &[&str]) -> DeliveryOutcome {
    let clean = |mut text: String| {
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            if text.contains(*s) {
                text = text.replace(*s, "[redacted]");
            }
        }
        text
    };
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
        DeliveryOutcome::QuotaExhausted { until, reason } => DeliveryOutcome::QuotaExhausted {
            until,
            reason: clean(reason),
        },
        DeliveryOutcome::CredentialsExpired { reason } => DeliveryOutcome::CredentialsExpired {
            reason: clean(reason),
        },
    }
}

/// Reads an answer, at most [`MAX_RESPONSE_BYTES`] of it.
pub async fn read_reply(
    what: &str,
    mut response: reqwest::Response,
) -> Result<Reply, DeliveryOutcome> {
    let status = response.status().as_u16();
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
        body,
        retry_after,
    })
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

    /// An `http://` or `https://` base URL without query, fragment or
    /// credentials, returned without its trailing `/`. The value is never
    /// echoed in an issue: an operator may have pasted a secret into it.
    pub fn base_url(&mut self, field: &str) -> Option<String> {
        let raw = self.string(field, true)?;
        match check_base_url(&raw) {
            Ok(url) => Some(url),
            Err(message) => {
                self.issue(field, message);
                None
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
        let reply = read_reply("test", response)
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
