//! What the host's outbound requests may and may not do with the provider
//! credentials they carry (issue 13, items 1–4):
//!
//! - a provider's redirect is never followed, so a 307/308 cannot replay a
//!   UserSig, a webhook code or a client secret to another listener;
//! - plain `http://` is for loopback only, unless the operator opts out;
//! - a hostile endpoint echoing a credential, whole, cut by the 300-char
//!   reason limit or escaped, gets none of it into the outbox, the host's
//!   log or the delivery report;
//! - a plugin never hears where the outbox's PostgreSQL is.
//!
//! Every server here is real and on loopback: a small HTTP/1.1 server that
//! answers from a closure and records what it was sent.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::Finished;
use botbox::delivery::store::OutboxRecord;
use botbox::providers::{DeliveryOutcome, Part, Registry};
use botbox::wit::types::{Content, CustomEvent, Event, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------
// The host's log, captured.

use support::{captured_logs, lock, log_buffer};

// ---------------------------------------------------------------------------
// A real HTTP/1.1 server on loopback that answers from a closure.

#[derive(Debug, Clone)]
struct Seen {
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter, URL-decoded.
    fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }

    /// A form or JSON body field.
    fn field(&self, name: &str) -> Option<String> {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            return v[name].as_str().map(str::to_string);
        }
        let text = String::from_utf8_lossy(&self.body);
        text.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Location".into(), location.into())],
            body: String::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct Server {
    base: String,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted, whether or not a request followed.
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (keep, count) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (keep, handler) = (keep.clone(), handler.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, keep, handler).await;
                });
            }
        });
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }
}

/// Serves requests on one connection until the client closes it.
async fn serve(
    mut stream: tokio::net::TcpStream,
    keep: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let _method = first.next();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + length].to_vec();
        buf.drain(..body_start + length);
        let seen = Seen {
            target,
            headers,
            body,
        };
        let reply = handler(&seen);
        lock(&keep).push(seen);
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        stream.write_all(out.as_bytes()).await?;
    }
}

// ---------------------------------------------------------------------------
// Provider configs on one server, with their secrets in files.

const BBB_SECRET: &str = "bbbS3cretValue0123456789abcdefABCDEF";
const TENCENT_KEY: &str = "tencentKey0123456789abcdefABCDEFghijklmn";
const EM_ID: &str = "YXA6clientId0123456789abcd";
const EM_SECRET: &str = "YXA6clientSecret/+=9876543210zyxw";
const B24_CODE: &str = "b24webhookcode0123456789xyz";
const B24_ACCESS: &str = "b24access0123456789abcdefgh";
const B24_REFRESH: &str = "b24refresh0123456789abcdefgh";
const B24_CLIENT_SECRET: &str = "b24clientSecret0123456789ABCDEFG";
/// The key the stored OAuth pair is sealed with (64 hex digits).
const B24_TOKEN_KEY: &str = "5eb1c0de7a11f00dfeedfacecafebabe0123456789abcdef0123456789abcdef";

fn write_secrets(dir: &Path) {
    for (name, value) in [
        ("bbb", BBB_SECRET),
        ("tencent", TENCENT_KEY),
        ("em-id", EM_ID),
        ("em-secret", EM_SECRET),
        ("b24-code", B24_CODE),
        ("b24-access", B24_ACCESS),
        ("b24-refresh", B24_REFRESH),
        ("b24-client-secret", B24_CLIENT_SECRET),
        ("b24-token-key", B24_TOKEN_KEY),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
}

/// Every provider kind, each on `base`, and one channel per provider.
fn providers_and_channels(base: &str) -> String {
    format!(
        r#"[providers.bbb]
kind = "bigbluebutton"
url = "{base}/bigbluebutton/api"
secret = {{ file = "bbb" }}

[providers.tencent]
kind = "tencent"
url = "{base}"
sdkappid = 1400000001
identifier = "administrator"
secret_key = {{ file = "tencent" }}

[providers.easemob]
kind = "easemob"
url = "{base}"
org = "org1"
app = "app1"
client_id = {{ file = "em-id" }}
client_secret = {{ file = "em-secret" }}

[providers.b24hook]
kind = "bitrix24"
url = "{base}"
webhook = {{ user_id = 1, code = {{ file = "b24-code" }} }}

[providers.b24oauth]
kind = "bitrix24"
url = "{base}"

[providers.b24oauth.oauth]
access_token = {{ file = "b24-access" }}
refresh_token = {{ file = "b24-refresh" }}
client_id = "local.app"
client_secret = {{ file = "b24-client-secret" }}
token_url = "{base}/oauth/token/"
token_key = {{ file = "b24-token-key" }}

[channels.bbb]
provider = "bbb"
target = {{ meetings = ["room-1"] }}
max_delay = "100d"

[channels.tencent]
provider = "tencent"
max_delay = "100d"

[channels.easemob]
provider = "easemob"
target = "all-users"
max_delay = "100d"

[channels.b24hook]
provider = "b24hook"
target = {{ dialogs = ["chat1"] }}
max_delay = "100d"

[channels.b24oauth]
provider = "b24oauth"
target = {{ dialogs = ["chat1"] }}
max_delay = "100d"
"#
    )
}

fn config(dir: &Path, text: &str) -> Config {
    let path = dir.join("botbox.toml");
    std::fs::write(&path, text).unwrap();
    Config::parse(text, &path, dir).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn text_message(channel: &str) -> Message {
    Message {
        channel: channel.into(),
        content: Content::Text("hello".into()),
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    }
}

fn part(target: &str, channel: &str) -> Part {
    Part {
        target: target.into(),
        message: text_message(channel),
        dedup_key: Some("12345".into()),
        merged: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Item 1: redirects.

/// Each provider request that carries a credential, answered by a redirect
/// to a second listener: the second listener hears nothing, and the error
/// names the status and the host only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_refused_and_replay_no_credential() {
    let thief = Server::start(|_| Reply::json(200, "{}".into())).await;
    let location = format!("{}/collected/path-marker?q=query-marker", thief.base);
    // (provider, channel, which request is redirected, status)
    let cases: [(&str, &str, &str, u16); 6] = [
        // The signed GET: the checksum in the query.
        ("bbb", "bbb", "/bigbluebutton/api/sendChatMessage", 307),
        // The UserSig in the query.
        (
            "tencent",
            "tencent",
            "/v4/group_open_http_svc/send_broadcast_msg",
            308,
        ),
        // client_id and client_secret in the body.
        ("easemob", "easemob", "/org1/app1/token", 307),
        // The webhook code in the path.
        ("b24hook", "b24hook", "/rest/1/", 308),
        // The access token in the body.
        ("b24oauth", "b24oauth", "/rest/im.message.add", 307),
        // client_secret and refresh_token in the refresh's body.
        ("b24oauth", "b24oauth", "/oauth/token/", 307),
    ];
    for (provider, channel, redirected, status) in cases {
        let loc = location.clone();
        let prefix = redirected.to_string();
        let server = Server::start(move |seen| {
            if seen.path().starts_with(&prefix) {
                return Reply::redirect(status, &loc);
            }
            // Everything else: just enough for the request to be made.
            match seen.path() {
                "/org1/app1/token" => Reply::json(
                    200,
                    r#"{"access_token":"YWMtemtoken0123456789","expires_in":3600}"#.into(),
                ),
                "/rest/im.message.add" => Reply::json(
                    401,
                    r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#
                        .into(),
                ),
                _ => Reply::json(200, "{}".into()),
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        write_secrets(dir.path());
        let config = config(dir.path(), &providers_and_channels(&server.base));
        let registry = Registry::from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
        let p = registry.get(provider).unwrap();
        let channel_config = &config.channels[channel];
        let target = match provider {
            "bbb" => "room-1",
            "b24hook" | "b24oauth" => "chat1",
            _ => "",
        };
        let outcome = match p.prepare(channel_config).await {
            Err(outcome) => outcome,
            Ok(()) => p.send(channel_config, &part(target, channel)).await,
        };
        let case = format!("{provider} {redirected} {status}");
        assert_eq!(
            thief.connections.load(Ordering::SeqCst),
            0,
            "{case}: the redirect was followed"
        );
        assert!(
            server
                .seen()
                .iter()
                .all(|s| s.path() != "/collected/path-marker"),
            "{case}: followed to the same server"
        );
        assert!(
            server
                .seen()
                .iter()
                .any(|s| s.path().starts_with(redirected)),
            "{case}: the redirected request was not made: {:?}",
            server.seen()
        );
        assert!(
            server.seen().iter().all(|s| !s
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("referer"))),
            "{case}: a Referer was sent"
        );
        let text = format!("{outcome:?}");
        let DeliveryOutcome::Rejected { code, reason } = &outcome else {
            panic!("{case}: not a refusal: {text}");
        };
        assert_eq!(code, &format!("http-{status}"), "{case}");
        assert!(
            reason.contains(&format!("HTTP {status}")),
            "{case}: {reason}"
        );
        assert!(reason.contains("host 127.0.0.1"), "{case}: {reason}");
        for never in [
            "collected",
            "path-marker",
            "query-marker",
            &thief.port.to_string(),
            "http://",
        ] {
            assert!(!text.contains(never), "{case}: {never} in {text}");
        }
    }
}

// ---------------------------------------------------------------------------
// Item 2: plain HTTP.

#[test]
fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    write_secrets(dir.path());
    let remote = providers_and_channels("http://chat.example.com");
    let c = config(dir.path(), &remote);
    let err = match App::build(c) {
        Ok(_) => panic!("plain http to a remote host was accepted"),
        Err(e) => e.to_string(),
    };
    let file = dir.path().join("botbox.toml").display().to_string();
    assert!(err.contains(&file), "the file is named: {err}");
    for key in [
        "providers.bbb.url",
        "providers.tencent.url",
        "providers.easemob.url",
        "providers.b24hook.url",
        "providers.b24oauth.url",
        "providers.b24oauth.oauth.token_url",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{key} is not named: {err}"));
        assert!(line.contains("use https://"), "{line}");
        let provider = key.split('.').nth(1).unwrap();
        assert!(
            line.contains(&format!(
                "allow_plaintext = true under [providers.{provider}]"
            )),
            "{line}"
        );
    }
    // The explicit opt-out, on every provider.
    let allowed = remote.replace("kind = \"", "allow_plaintext = true\nkind = \"");
    let c = config(dir.path(), &allowed);
    Registry::from_config(&c).unwrap_or_else(|e| panic!("allowed: {e:?}"));
    // A non-boolean opt-out is an error, not a yes.
    let wrong = remote.replacen(
        "kind = \"bigbluebutton\"",
        "allow_plaintext = \"yes\"\nkind = \"bigbluebutton\"",
        1,
    );
    let issues = Registry::from_config(&config(dir.path(), &wrong))
        .err()
        .unwrap();
    assert!(
        issues.iter().any(
            |i| i.key == "providers.bbb.allow_plaintext" && i.message.contains("true or false")
        ),
        "{issues:?}"
    );
    // Loopback and https need nothing.
    for base in [
        "http://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
        "https://chat.example.com",
    ] {
        let c = config(dir.path(), &providers_and_channels(base));
        Registry::from_config(&c).unwrap_or_else(|e| panic!("{base}: {e:?}"));
    }
}

// ---------------------------------------------------------------------------
// Item 3: echoed credentials.

/// A credential spelled the ways a hostile answer may spell it, each
/// placed so it straddles the 300-character cut of a reason.
fn echoes(secret: &str) -> Vec<String> {
    let json_u: String = secret
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                format!("\\u{:04x}", c as u32)
            } else if c == '/' {
                "\\/".into()
            } else {
                c.to_string()
            }
        })
        .collect();
    let percent: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
    let mixed: String = secret
        .chars()
        .enumerate()
        .map(|(i, c)| match i % 3 {
            0 => format!("%{:02x}", c as u32),
            1 => format!("\\u{:04X}", c as u32),
            _ => c.to_string(),
        })
        .collect();
    vec![secret.to_string(), json_u, percent, mixed]
}

/// A JSON string literal holding `raw` (already escaped where it means to
/// be) after `pad` dots, so what follows starts near the 300-char cut.
fn padded(pad: usize, raw: &str) -> String {
    format!("{}{raw} tail", ".".repeat(pad))
}

/// Decodes the escapes a leak could hide behind, for the check.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 6)].iter().collect();
        if rest.starts_with("\\u")
            && let Some(v) = rest.get(2..6).and_then(|h| u32::from_str_radix(h, 16).ok())
        {
            out.push(char::from_u32(v).unwrap_or('?'));
            i += 6;
            continue;
        }
        if rest.starts_with('%')
            && let Some(v) = rest.get(1..3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v as char);
            i += 3;
            continue;
        }
        if chars[i] == '\\' {
            i += 1;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Fails if any 8 characters in a row of any secret are in `text`, as
/// written or once unescaped.
fn assert_no_part(what: &str, text: &str, secrets: &BTreeSet<String>) {
    let plain = normalize(text);
    for secret in secrets {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(8) {
            let w: String = window.iter().collect();
            for (form, t) in [("as written", text), ("unescaped", plain.as_str())] {
                if let Some(at) = t.find(&w) {
                    let start = t[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
                    panic!(
                        "{what} shows part of a secret ({form}), {}… after {:?}",
                        &w[..3],
                        &t[start..at]
                    );
                }
            }
        }
    }
}

/// Every answer path of every provider echoes the credential its request
/// carried (or the account's own secret, which the hostile endpoint knows),
/// across the reason's cut and in escaped forms. Nothing of any of them
/// reaches the outbox, the delivery report or the host's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_credentials_reach_no_record_report_or_log() {
    log_buffer();
    // The credentials the host makes at run time, as the server saw them.
    let learned: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let calls: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let keep = learned.clone();
    let server = Server::start(move |seen| {
        let path = seen.path().to_string();
        // Which spelling, and where around the cut, changes with each
        // request to the same place.
        let label: String = path.chars().take(12).collect();
        let n = {
            let mut calls = lock(&calls);
            let n = calls.entry(label).or_insert(0);
            *n += 1;
            *n - 1
        };
        let pick = |secret: &str| {
            let forms = echoes(secret);
            let form = n % forms.len();
            // Reasons keep 300 chars of provider text: the raw secret
            // starts 20 characters before that cut, so it straddles it;
            // the escaped spellings come whole, early.
            let pad = if form == 0 { 280 } else { 20 };
            padded(pad, &forms[form])
        };
        if path.starts_with("/v4/") {
            let sig = seen.query("usersig").unwrap_or_default();
            lock(&keep).insert(sig.clone());
            // 70001 twice (the retry with a fresh UserSig), each echoing
            // the UserSig it came with; then the account key in a 70009.
            let info = if n % 3 == 2 {
                pick(TENCENT_KEY)
            } else {
                pick(&sig)
            };
            let code = if n % 3 == 2 { 70009 } else { 70001 };
            return Reply::json(
                200,
                format!(r#"{{"ActionStatus":"FAIL","ErrorCode":{code},"ErrorInfo":"{info}"}}"#),
            );
        }
        if path == "/org1/app1/token" {
            let secret = seen.field("client_secret").unwrap_or_default();
            return Reply::json(
                401,
                format!(
                    r#"{{"error":"invalid_client","error_description":"{}"}}"#,
                    pick(&secret)
                ),
            );
        }
        if path.starts_with("/rest/1/") {
            // The webhook code from the path, in a refusal and in a body
            // that is not JSON at all.
            let code = path.split('/').nth(3).unwrap_or_default().to_string();
            return if n % 2 == 0 {
                Reply::json(
                    400,
                    format!(
                        r#"{{"error":"ERROR_ARGUMENT","error_description":"{}"}}"#,
                        pick(&code)
                    ),
                )
            } else {
                Reply {
                    status: 502,
                    headers: vec![],
                    body: pick(&code),
                }
            };
        }
        if path == "/rest/im.message.add" {
            let access = seen.field("auth").unwrap_or_default();
            return Reply::json(
                401,
                format!(
                    r#"{{"error":"expired_token","error_description":"{}"}}"#,
                    pick(&access)
                ),
            );
        }
        if path == "/oauth/token/" {
            let refresh = seen.field("refresh_token").unwrap_or_default();
            let secret = seen.field("client_secret").unwrap_or_default();
            let said = if n % 2 == 0 {
                pick(&refresh)
            } else {
                pick(&secret)
            };
            return Reply::json(
                400,
                format!(r#"{{"error":"invalid_grant","error_description":"{said}"}}"#),
            );
        }
        if path.starts_with("/bigbluebutton/api/") {
            // The shared secret, as XML character references.
            let refs: String = BBB_SECRET
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        format!("&#{};", c as u32)
                    } else {
                        format!("&#x{:x};", c as u32)
                    }
                })
                .collect();
            let message = if n % 2 == 0 {
                padded(20, &refs)
            } else {
                padded(280, BBB_SECRET)
            };
            return Reply {
                status: 200,
                headers: vec![("Content-Type".into(), "text/xml".into())],
                body: format!(
                    "<response><returncode>FAILED</returncode><messageKey>notFound</messageKey>\
                     <message>{message}</message></response>"
                ),
            };
        }
        Reply::json(404, "{}".into())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    write_secrets(dir.path());
    // `botbox run` wants a plugin; this one only holds the channel grants.
    let channels = ["bbb", "tencent", "easemob", "b24hook", "b24oauth"];
    let bot = support::WatPlugin::new(support::Ask {
        channels: &channels,
        events: &[4],
        ..support::Ask::default()
    })
    .build();
    std::fs::write(dir.path().join("bot.wasm"), bot).unwrap();
    let text = format!(
        "[runtime]\nreload = false\ntime_scale = 50\n{}\n[plugins.bot]\npath = \"bot.wasm\"\n\
         channels = [\"bbb\", \"tencent\", \"easemob\", \"b24hook\", \"b24oauth\"]\n",
        providers_and_channels(&server.base)
    );
    let app = App::build(config(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    let finished: Arc<Mutex<Vec<Finished>>> = Arc::default();
    let mut rx = app.delivery.observers().finished.subscribe();
    let reports = finished.clone();
    tokio::spawn(async move {
        while let Ok(f) = rx.recv().await {
            lock(&reports).push(f);
        }
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = app.delivery.start(stop.clone());
    // Two messages a channel, so each spelling and cut comes round.
    let mut ids = Vec::new();
    for _ in 0..2 {
        for name in channels {
            let ch = app.delivery.channel(name).unwrap();
            let receipt = app
                .delivery
                .accept("bot", &ch, text_message(name))
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            ids.push((name, receipt.id));
        }
    }
    // Each message has been tried (and failed) at least twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = |id: &str| -> OutboxRecord { app.delivery.outbox().get(id).unwrap().unwrap() };
    for (name, id) in &ids {
        loop {
            let r = record(id);
            if r.finished_ms.is_some() || (r.attempts >= 2 && r.last_error.is_some()) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: not tried: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.cancel();
    workers.wait().await;

    let mut secrets: BTreeSet<String> = [
        BBB_SECRET,
        TENCENT_KEY,
        EM_ID,
        EM_SECRET,
        B24_CODE,
        B24_ACCESS,
        B24_REFRESH,
        B24_CLIENT_SECRET,
        B24_TOKEN_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let usersigs = lock(&learned).clone();
    // A "fresh" UserSig made in the same second is the same string.
    assert!(!usersigs.is_empty(), "no UserSig seen");
    secrets.extend(usersigs);

    // Every answer path was taken.
    let paths: BTreeSet<String> = server.seen().iter().map(|s| s.path().to_string()).collect();
    for want in [
        "/v4/group_open_http_svc/send_broadcast_msg",
        "/org1/app1/token",
        "/rest/1/b24webhookcode0123456789xyz/im.message.add.json",
        "/rest/im.message.add",
        "/oauth/token/",
        "/bigbluebutton/api/sendChatMessage",
    ] {
        assert!(paths.contains(want), "{want} not called: {paths:?}");
    }
    for (name, id) in &ids {
        let r = record(id);
        let error = r.last_error.clone().unwrap_or_default();
        // The reasons still say what happened.
        assert!(!error.is_empty(), "{name}: {r:?}");
        assert_no_part(
            &format!("the outbox record of {name}"),
            &format!("{r:?}"),
            &secrets,
        );
        for p in app.delivery.outbox().parts(id).unwrap() {
            assert_no_part(
                &format!("an outbox part of {name}"),
                &format!("{p:?}"),
                &secrets,
            );
        }
    }
    let reports = lock(&finished).clone();
    assert!(!reports.is_empty(), "some messages failed for good");
    for f in &reports {
        assert_no_part("a delivery report", &format!("{f:?}"), &secrets);
    }
    let logs = captured_logs();
    assert!(
        logs.contains("[redacted]"),
        "the echoes were seen and redacted"
    );
    assert_no_part("the host's log", &logs, &secrets);
}

// ---------------------------------------------------------------------------
// Item 4: where the outbox is, is the operator's business.

/// With the PostgreSQL outbox down, a plugin's `send-broadcast` fails with
/// a generic reason; the operator's log has the host, port and database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_does_not_learn_where_the_outbox_is() {
    log_buffer();
    let server = pg::PgServer::start();
    let port = server.port().to_string();
    let mut p = support::WatPlugin::new(support::Ask::default());
    let msg = p.text_message("lobby", "hello");
    // Send, then log the error's text (result at SEND_RET: the error case
    // at +8, its string's pointer and length at +16 and +20).
    let body = format!(
        "(call $send (i32.const {msg}) (i32.const {ret}))
         (call $log (i32.const 2) (i32.load (i32.const {ptr})) (i32.load (i32.const {len})))",
        ret = support::SEND_RET,
        ptr = support::SEND_RET + 16,
        len = support::SEND_RET + 20,
    );
    let plugin = p.body(&body).build();
    let host = support::TestHost::with_top(&[("bot", plugin, "")], |dir| {
        server.write_url(dir);
        server.storage_section("30s")
    });
    host.load_all().await;
    let mut lines = host.app.runtime.services().log_observers.subscribe();
    server.stop();
    let event = Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    });
    let _ = host.app.runtime.dispatch("bot", &event).await;
    let mut guest = Vec::new();
    while let Ok(r) = lines.try_recv() {
        guest.push(r.message);
    }
    let said = guest.join("\n");
    assert!(
        said.contains("the outbox could not store the message; the operator's log has the details"),
        "{said:?}"
    );
    for never in ["127.0.0.1", port.as_str(), "postgres", "database", "5432"] {
        assert!(!said.contains(never), "the plugin heard {never}: {said}");
    }
    let logs = captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("send-broadcast was refused") && l.contains(&port))
        .unwrap_or_else(|| panic!("the operator's log lacks the detail"));
    assert!(
        line.contains("127.0.0.1") && line.contains("plugin=bot"),
        "{line}"
    );
    drop(server);
}
