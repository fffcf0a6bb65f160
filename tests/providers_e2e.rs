//! End to end, for each provider: a plugin's `send-broadcast`, then botbox's
//! real HTTP client, then the provider simulator (botbox-sim). Every
//! documented error path must end in the right typed outcome (final state,
//! `last_error`, the finished report), and no secret may appear in any log
//! line, error, outbox record or CLI output.
//!
//! Secrets include the ones the host makes or is given at run time (Tencent
//! UserSigs, Easemob app tokens, refreshed Bitrix24 tokens): every request
//! goes through a small TCP tap in front of the simulator, and whatever
//! credential crosses the wire is added to the list that logs and errors are
//! checked against.
//!
//! Clocks: each test runs the host's throttle and retry clock and the
//! simulator's clock at the same `time_scale`: small where the simulator
//! enforces one-second windows, large where only retries and backoff have to
//! pass. Where windows matter the simulator also allows [`JITTER_MS`] of
//! real arrival jitter, on top of the host's own margin: on a loaded
//! two-core machine two requests the throttle spaced correctly were seen
//! arriving 30+ ms closer together than they left.

mod support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::Finished;
use botbox::delivery::outbox::{ListFilter, MessageState, OutboxRecord, PartRecord, PartState};
use botbox::wit::types::{ChatMessage, CustomEvent, Event, MeetingEvent, MeetingEventKind};
use botbox_sim::{Fault, Outcome, Sim, SimConfig, SimDelivery, SimProvider, Target, endpoints};
use serde_json::{Value, json};
use support::{Ask, Data, SEND_RET, WatPlugin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wit_parser::{Int, Resolve, SizeAlign, Type, TypeDefKind, TypeId};

// ---------------------------------------------------------------------------
// Everything the host logs, and every secret it must not show.

use support::{captured_logs, lock, log_buffer};

/// Every secret any test configured or saw on the wire. The log buffer is
/// shared by the tests of this file, so it is checked against all of them.
fn secrets() -> &'static Mutex<BTreeSet<String>> {
    static SECRETS: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(BTreeSet::new()))
}

fn add_secret(value: &str) {
    let value = value.trim();
    assert!(value.len() >= 8, "too short to be a distinctive secret");
    lock(secrets()).insert(value.to_string());
}

/// Fails if `text` holds any known secret, naming where and which (masked).
fn assert_no_secret(what: &str, text: &str) {
    let known = lock(secrets()).clone();
    for secret in &known {
        if let Some(at) = text.find(secret.as_str()) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what} shows the secret {}…({} bytes) after: {:?}",
                &secret[..4],
                secret.len(),
                &text[start..at]
            );
        }
    }
}

/// Real time a request may arrive early at the simulator without counting
/// as a violation (see the file's doc comment). At the scale used with it
/// (5) that is a tenth of a simulated second.
const JITTER_MS: u64 = 20;
/// `oauth.token_key` of the Bitrix24 OAuth accounts: seals the stored pair.
const BITRIX_TOKEN_KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The demo simulators with [`JITTER_MS`] of tolerance.
fn windows_sim() -> SimConfig {
    SimConfig {
        tolerance_ms: JITTER_MS,
        ..SimConfig::demo()
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

// ---------------------------------------------------------------------------
// A TCP tap in front of each simulator: forwards bytes both ways and keeps
// them, so the credentials the host sends or receives are known.

/// One buffer per connection and direction.
type Streams = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

struct Tap {
    port: u16,
    streams: Streams,
}

impl Tap {
    async fn start(upstream: u16) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams: Streams = Arc::default();
        let keep = streams.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let up: Arc<Mutex<Vec<u8>>> = Arc::default();
                let down: Arc<Mutex<Vec<u8>>> = Arc::default();
                lock(&keep).extend([up.clone(), down.clone()]);
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, up), pump(sr, cw, down));
                });
            }
        });
        Tap { port, streams }
    }

    fn traffic(&self) -> Vec<String> {
        lock(&self.streams)
            .iter()
            .map(|s| String::from_utf8_lossy(&lock(s)).into_owned())
            .collect()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    keep: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lock(&keep).extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The values following `prefix` in `text`, up to a character `stop` accepts.
fn values_after(text: &str, prefix: &str, stop: fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let end = rest.find(stop).unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// `TLS.sig` inside a UserSig: the HMAC itself, a secret of its own.
fn usersig_hmac(usersig: &str) -> Option<String> {
    let b64: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let mut json_text = String::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_string(&mut json_text)
        .ok()?;
    let doc: Value = serde_json::from_str(&json_text).ok()?;
    doc["TLS.sig"].as_str().map(str::to_string)
}

/// Registers every credential that crossed the taps. Returns how many
/// distinct ones were seen, by kind, so tests can check the tap saw them.
fn harvest(taps: &[&Tap]) -> BTreeSet<(&'static str, String)> {
    let quote = |c: char| c == '"';
    let query_end = |c: char| c == '&' || c == ' ' || c == '\r' || c == '\n';
    let line_end = |c: char| c == '\r' || c == '\n';
    let mut found = BTreeSet::new();
    for tap in taps {
        for text in tap.traffic() {
            for v in values_after(&text, "usersig=", query_end) {
                if let Some(hmac) = usersig_hmac(&v) {
                    found.insert(("tencent TLS.sig", hmac));
                }
                found.insert(("tencent usersig", v));
            }
            for v in values_after(&text, "\"access_token\":\"", quote) {
                found.insert(("access_token", v));
            }
            for v in values_after(&text, "\"refresh_token\":\"", quote) {
                found.insert(("refresh_token", v));
            }
            for v in values_after(&text, "Bearer ", line_end) {
                found.insert(("bearer", v));
            }
            for v in values_after(&text, "\"auth\":\"", quote) {
                found.insert(("bitrix auth", v));
            }
        }
    }
    for (_, v) in &found {
        add_secret(v);
    }
    found
}

// ---------------------------------------------------------------------------
// Messages as the canonical ABI lays them out, from JSON shaped like the WIT
// `message` record: {"channel": "x", "content": {"custom": {"event": …}}, …}.
// Records take fields by name (missing: none / false), variants a one-key
// object (or a string for a case without payload), enums their case name.

struct Abi {
    resolve: Resolve,
    sizes: SizeAlign,
    message: TypeId,
}

fn abi() -> &'static Abi {
    static ABI: OnceLock<Abi> = OnceLock::new();
    ABI.get_or_init(|| {
        let text = std::fs::read_to_string(support::repo_root().join("wit/bot.wit")).unwrap();
        let mut resolve = Resolve::default();
        resolve.push_str("bot.wit", &text).unwrap();
        let mut sizes = SizeAlign::default();
        sizes.fill(&resolve);
        let message = resolve
            .types
            .iter()
            .find(|(_, t)| {
                t.name.as_deref() == Some("message") && matches!(t.kind, TypeDefKind::Record(_))
            })
            .map(|(id, _)| id)
            .expect("the message record");
        Abi {
            resolve,
            sizes,
            message,
        }
    })
}

fn put(mem: &mut [u8], at: usize, bytes: &[u8]) {
    mem[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_tag(mem: &mut [u8], at: usize, tag: Int, index: usize) {
    match tag {
        Int::U8 => mem[at] = index as u8,
        Int::U16 => put(mem, at, &(index as u16).to_le_bytes()),
        Int::U32 => put(mem, at, &(index as u32).to_le_bytes()),
        Int::U64 => put(mem, at, &(index as u64).to_le_bytes()),
    }
}

impl Abi {
    fn lower(&self, ty: &Type, v: &Value, mem: &mut [u8], at: usize, data: &mut Data) {
        match ty {
            Type::Bool => mem[at] = u8::from(v.as_bool().unwrap_or(false)),
            Type::U8 => mem[at] = v.as_u64().expect("u8") as u8,
            Type::U32 => put(mem, at, &(v.as_u64().expect("u32") as u32).to_le_bytes()),
            Type::U64 => put(mem, at, &v.as_u64().expect("u64").to_le_bytes()),
            Type::F64 => put(mem, at, &v.as_f64().expect("f64").to_le_bytes()),
            Type::String => {
                let (p, l) = data.string(v.as_str().unwrap_or_else(|| panic!("string: {v}")));
                put(mem, at, &p.to_le_bytes());
                put(mem, at + 4, &l.to_le_bytes());
            }
            Type::Id(id) => match &self.resolve.types[*id].kind {
                TypeDefKind::Type(t) => self.lower(t, v, mem, at, data),
                TypeDefKind::Record(r) => {
                    let offsets = self.sizes.field_offsets(r.fields.iter().map(|f| &f.ty));
                    for (field, (offset, fty)) in r.fields.iter().zip(offsets) {
                        let value = v.get(&field.name).unwrap_or(&Value::Null);
                        self.lower(fty, value, mem, at + offset.size_wasm32(), data);
                    }
                }
                TypeDefKind::Option(t) => {
                    if v.is_null() {
                        mem[at] = 0;
                    } else {
                        mem[at] = 1;
                        let offset = self.sizes.payload_offset(Int::U8, [None, Some(t)]);
                        self.lower(t, v, mem, at + offset.size_wasm32(), data);
                    }
                }
                TypeDefKind::Variant(var) => {
                    let (case, payload) = match v {
                        Value::String(s) => (s.as_str(), &Value::Null),
                        Value::Object(o) if o.len() == 1 => {
                            let (k, p) = o.iter().next().unwrap();
                            (k.as_str(), p)
                        }
                        other => panic!("a variant is a one-key object: {other}"),
                    };
                    let index = var
                        .cases
                        .iter()
                        .position(|c| c.name == case)
                        .unwrap_or_else(|| panic!("no case {case}"));
                    put_tag(mem, at, var.tag(), index);
                    if let Some(t) = &var.cases[index].ty {
                        let offset = self
                            .sizes
                            .payload_offset(var.tag(), var.cases.iter().map(|c| c.ty.as_ref()));
                        self.lower(t, payload, mem, at + offset.size_wasm32(), data);
                    }
                }
                TypeDefKind::Enum(e) => {
                    let name = v.as_str().expect("an enum case name");
                    let index = e
                        .cases
                        .iter()
                        .position(|c| c.name == name)
                        .unwrap_or_else(|| panic!("no enum case {name}"));
                    put_tag(mem, at, e.tag(), index);
                }
                other => panic!("not used by message: {other:?}"),
            },
            other => panic!("not used by message: {other:?}"),
        }
    }

    /// Lays out a message in the plugin's data; returns its address.
    fn message(&self, data: &mut Data, v: &Value) -> u32 {
        let ty = Type::Id(self.message);
        let mut mem = vec![0u8; self.sizes.size(&ty).size_wasm32()];
        self.lower(&ty, v, &mut mem, 0, data);
        data.bytes(&mem, self.sizes.align(&ty).align_wasm32() as u32)
    }
}

/// A plugin that, on any event, calls `send-broadcast` with each message in
/// turn and logs `send NN r=R c=C` (R 0 ok / 1 err, C the error case or `-`),
/// then the error's text when it has one.
///
/// Last, it copies its whole linear memory into its kv namespace (`mem0`,
/// `mem1`, … of 64 KiB each), so the test can scan for secrets everything
/// the host ever wrote into the guest: answers, errors, events.
fn sender_plugin(channels: &[&str], messages: &[Value]) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask {
        channels,
        // chat-message, meeting and custom: the first two teach the plugin
        // a conversation it may then name in reply-to.
        events: &[0, 1, 4],
        schedules: &[],
    })
    .imports(r#"(import "botbox:bot/kv@0.1.0" "set" (func $kv_set (param i32 i32 i32 i32 i32)))"#);
    let (dump_key, _) = p.data.string("mem?");
    let mut body = String::new();
    for (i, m) in messages.iter().enumerate() {
        let addr = abi().message(&mut p.data, m);
        let line = format!("send {i:02} r=? c=?");
        let (at, len) = p.data.string(&line);
        let r_at = at + line.find("r=").unwrap() as u32 + 2;
        let c_at = at + line.find("c=").unwrap() as u32 + 2;
        let (ok, tag, text) = (SEND_RET, SEND_RET + 8, SEND_RET + 16);
        body.push_str(&format!(
            "(call $send (i32.const {addr}) (i32.const {SEND_RET}))
             (i32.store8 (i32.const {r_at}) (i32.add (i32.const 48) (i32.load8_u (i32.const {ok}))))
             (i32.store8 (i32.const {c_at}) (select (i32.add (i32.const 48) (i32.load8_u (i32.const {tag})))
                                                    (i32.const 45) (i32.load8_u (i32.const {ok}))))
             (call $log (i32.const 2) (i32.const {at}) (i32.const {len}))
             (if (i32.eq (i32.load8_u (i32.const {ok})) (i32.const 1)) (then
               (local.set $i (i32.load8_u (i32.const {tag})))
               (if (i32.and (i32.ne (local.get $i) (i32.const 4)) (i32.ne (local.get $i) (i32.const 5)))
                 (then (call $log (i32.const 3) (i32.load (i32.const {text})) (i32.load (i32.const {})))))))
",
            text + 4
        ));
    }
    body.push_str(&format!(
        "(local.set $i (i32.const 0))
         (block $done (loop $dump
           (br_if $done (i32.ge_u (local.get $i) (memory.size)))
           (i32.store8 (i32.const {digit}) (i32.add (i32.const 48) (local.get $i)))
           (call $kv_set (i32.const {dump_key}) (i32.const 4)
                 (i32.mul (local.get $i) (i32.const 65536)) (i32.const 65536) (i32.const {ret}))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br $dump)))",
        digit = dump_key + 3,
        ret = SEND_RET + 200,
    ));
    p.body(&body).build()
}

/// The guest memory `sender_plugin` dumped into kv, as text.
fn guest_memory(app: &App, plugin: &str) -> String {
    let kv = app.runtime.services().kv;
    let limits = app
        .runtime
        .plugin(plugin)
        .expect("loaded")
        .context
        .slices
        .kv
        .limits;
    let mut text = String::new();
    for page in 0..64u8 {
        let key = format!("mem{}", (b'0' + page) as char);
        match kv.get(plugin, &key, &limits).expect("kv get") {
            Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
    }
    assert!(!text.is_empty(), "{plugin} dumped no memory");
    text
}

fn text_to(channel: &str, text: &str) -> Value {
    json!({ "channel": channel, "content": { "text": text } })
}

/// `broadcast-error` case numbers, as the WIT orders them.
const INVALID: u8 = 2;
const UNSUPPORTED: u8 = 3;

/// What one `send-broadcast` call answered.
#[derive(Debug, Clone)]
struct Sent {
    receipt: Option<String>,
    error: Option<(u8, String)>,
}

impl Sent {
    fn id(&self) -> String {
        self.receipt
            .clone()
            .unwrap_or_else(|| panic!("send-broadcast was refused: {:?}", self.error))
    }
}

// ---------------------------------------------------------------------------
// A simulator, its taps, a folder with secret files and a config.

struct Urls {
    bbb: String,
    tencent: String,
    easemob: String,
    bitrix: String,
}

struct Setup {
    sim: Sim,
    taps: Vec<Tap>,
    urls: Urls,
    dir: tempfile::TempDir,
    scale: f64,
}

fn port_of(url: &str) -> u16 {
    let after = url.trim_start_matches("http://127.0.0.1:");
    after[..after.find('/').unwrap_or(after.len())]
        .parse()
        .unwrap()
}

impl Setup {
    async fn start(mut cfg: SimConfig, scale: f64) -> Setup {
        log_buffer();
        cfg.time_scale = scale;
        // The simulator's demo credentials are the real secrets here.
        add_secret(&cfg.bbb.secret);
        add_secret(&cfg.tencent.secret_key);
        add_secret(&cfg.easemob.client_id);
        add_secret(&cfg.easemob.client_secret);
        add_secret(&cfg.bitrix.webhook_code);
        add_secret(&cfg.bitrix.client_secret);
        add_secret(&cfg.bitrix.access_token);
        add_secret(&cfg.bitrix.refresh_token);
        add_secret(BITRIX_TOKEN_KEY);
        let sim = Sim::start(cfg).await.expect("simulators start");
        let mut taps = Vec::new();
        for url in [
            sim.bbb_url(),
            sim.tencent_url(),
            sim.easemob_url(),
            sim.bitrix_url(),
        ] {
            taps.push(Tap::start(port_of(&url)).await);
        }
        let tapped = |i: usize, url: String| {
            url.replace(
                &format!(":{}", port_of(&url)),
                &format!(":{}", taps[i].port),
            )
        };
        let urls = Urls {
            bbb: tapped(0, sim.bbb_url()),
            tencent: tapped(1, sim.tencent_url()),
            easemob: tapped(2, sim.easemob_url()),
            bitrix: tapped(3, sim.bitrix_url()),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        Setup {
            sim,
            taps,
            urls,
            dir,
            scale,
        }
    }

    fn cfg(&self) -> &SimConfig {
        self.sim.config()
    }

    /// Writes a secret file; returns the `{ file = … }` reference to it.
    fn secret(&self, name: &str, value: &str) -> String {
        add_secret(value);
        let path = self.dir.path().join("secrets").join(name);
        std::fs::write(&path, value).unwrap();
        format!("{{ file = {} }}", toml_str(&path.display().to_string()))
    }

    fn bbb(&self, name: &str, secret: &str) -> String {
        format!(
            "[providers.{name}]\nkind = \"bigbluebutton\"\nurl = {}\nsecret = {}\nchecksum = \"sha256\"\n",
            toml_str(&self.urls.bbb),
            self.secret(&format!("{name}-secret"), secret)
        )
    }

    fn tencent(&self, name: &str, key: &str) -> String {
        let c = &self.cfg().tencent;
        format!(
            "[providers.{name}]\nkind = \"tencent\"\nurl = {}\nsdkappid = {}\nidentifier = {}\nsecret_key = {}\n",
            toml_str(&self.urls.tencent),
            c.sdkappid,
            toml_str(&c.identifier),
            self.secret(&format!("{name}-key"), key)
        )
    }

    fn easemob(&self, name: &str, client_secret: &str) -> String {
        let c = &self.cfg().easemob;
        format!(
            "[providers.{name}]\nkind = \"easemob\"\nurl = {}\norg = {}\napp = {}\nclient_id = {}\nclient_secret = {}\n",
            toml_str(&self.urls.easemob),
            toml_str(&c.org),
            toml_str(&c.app),
            self.secret(&format!("{name}-id"), &c.client_id),
            self.secret(&format!("{name}-secret"), client_secret)
        )
    }

    fn bitrix_webhook(&self, name: &str, code: &str) -> String {
        format!(
            "[providers.{name}]\nkind = \"bitrix24\"\nurl = {}\nwebhook = {{ user_id = {}, code = {} }}\n",
            toml_str(&self.urls.bitrix),
            self.cfg().bitrix.webhook_user_id,
            self.secret(&format!("{name}-code"), code)
        )
    }

    fn bitrix_oauth(&self, name: &str, access: &str, refresh: &str) -> String {
        let c = &self.cfg().bitrix;
        format!(
            "[providers.{name}]\nkind = \"bitrix24\"\nurl = {url}\n\
             [providers.{name}.oauth]\naccess_token = {}\nrefresh_token = {}\nclient_id = {}\nclient_secret = {}\ntoken_url = {}\ntoken_key = {}\n",
            self.secret(&format!("{name}-access"), access),
            self.secret(&format!("{name}-refresh"), refresh),
            toml_str(&c.client_id),
            self.secret(&format!("{name}-client-secret"), &c.client_secret),
            toml_str(&format!("{}/oauth/token/", self.urls.bitrix)),
            self.secret(&format!("{name}-token-key"), BITRIX_TOKEN_KEY),
            url = toml_str(&self.urls.bitrix),
        )
    }

    /// Writes `botbox.toml` with the providers, channels and one plugin per
    /// step (`step0`, `step1`, …), each sending its messages on any event,
    /// then `extra` (more plugins).
    fn write_config(
        &self,
        providers: &str,
        channels: &str,
        steps: &[Vec<Value>],
        extra: &str,
    ) -> PathBuf {
        let mut text = format!(
            "[storage]\ndir = \"state\"\n[runtime]\nreload = false\ntime_scale = {:?}\n{providers}\n{channels}\n",
            self.scale
        );
        let names: Vec<String> = channels
            .lines()
            .filter_map(|l| l.trim().strip_prefix("[channels."))
            .map(|l| l.trim_end_matches(']').to_string())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let granted = names
            .iter()
            .map(|n| toml_str(n))
            .collect::<Vec<_>>()
            .join(", ");
        for (i, messages) in steps.iter().enumerate() {
            std::fs::write(
                self.dir.path().join(format!("step{i}.wasm")),
                sender_plugin(&names, messages),
            )
            .unwrap();
            text.push_str(&format!(
                "[plugins.step{i}]\npath = \"step{i}.wasm\"\nchannels = [{granted}]\n\
                 events = [\"custom\", \"meeting\", \"chat-message\"]\n\
                 limits = {{ deadline_ms = 20000 }}\n"
            ));
        }
        text.push_str(extra);
        let path = self.dir.path().join("botbox.toml");
        std::fs::write(&path, &text).unwrap();
        path
    }

    fn tap_refs(&self) -> Vec<&Tap> {
        self.taps.iter().collect()
    }
}

/// A running host on a [`Setup`]: delivery workers started, finished
/// reports and plugin log lines collected.
struct Host {
    setup: Setup,
    app: App,
    stop: CancellationToken,
    workers: TaskTracker,
    finished: Arc<Mutex<Vec<Finished>>>,
    plugin_lines: Mutex<Vec<String>>,
}

impl Host {
    async fn start(setup: Setup, providers: &str, channels: &str, steps: &[Vec<Value>]) -> Host {
        Host::start_with(setup, providers, channels, steps, "").await
    }

    async fn start_with(
        setup: Setup,
        providers: &str,
        channels: &str,
        steps: &[Vec<Value>],
        extra: &str,
    ) -> Host {
        let path = setup.write_config(providers, channels, steps, extra);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text, &path, setup.dir.path())
            .unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        let app = App::build(config).unwrap_or_else(|e| panic!("build: {e}"));
        let errors = app.load_plugins().await;
        assert!(errors.is_empty(), "{errors:?}");
        let finished: Arc<Mutex<Vec<Finished>>> = Arc::default();
        let mut rx = app.delivery.observers().finished.subscribe();
        let keep = finished.clone();
        tokio::spawn(async move {
            while let Ok(f) = rx.recv().await {
                lock(&keep).push(f);
            }
        });
        let stop = CancellationToken::new();
        let workers = app.delivery.start(stop.clone());
        Host {
            setup,
            app,
            stop,
            workers,
            finished,
            plugin_lines: Mutex::default(),
        }
    }

    fn sim(&self) -> &Sim {
        &self.setup.sim
    }

    /// Dispatches a custom event to plugin `step{n}` and returns what each
    /// of its `send-broadcast` calls answered.
    async fn step(&self, n: usize) -> Vec<Sent> {
        let go = Event::Custom(CustomEvent {
            name: "go".into(),
            payload: String::new(),
        });
        self.step_on(n, &go).await
    }

    /// Dispatches `event` to a plugin; returns the receipts it got.
    async fn dispatch(&self, plugin: &str, event: &Event) -> Vec<String> {
        let mut accepted = self.app.delivery.observers().accepted.subscribe();
        self.app
            .runtime
            .dispatch(plugin, event)
            .await
            .unwrap_or_else(|e| panic!("{plugin}: {e}"));
        let mut receipts = Vec::new();
        while let Ok(a) = accepted.try_recv() {
            receipts.push(a.receipt.id);
        }
        receipts
    }

    async fn step_on(&self, n: usize, event: &Event) -> Vec<Sent> {
        let mut logs = self.app.runtime.services().log_observers.subscribe();
        let mut accepted = self.app.delivery.observers().accepted.subscribe();
        self.app
            .runtime
            .dispatch(&format!("step{n}"), event)
            .await
            .unwrap_or_else(|e| panic!("step{n}: {e}"));
        assert_no_secret(
            &format!("the linear memory of step{n}"),
            &guest_memory(&self.app, &format!("step{n}")),
        );
        let mut lines = Vec::new();
        while let Ok(r) = logs.try_recv() {
            lines.push(r.message);
        }
        lock(&self.plugin_lines).extend(lines.iter().cloned());
        let mut receipts = Vec::new();
        while let Ok(a) = accepted.try_recv() {
            receipts.push(a.receipt.id);
        }
        let mut receipts = receipts.into_iter();
        let mut sent: Vec<Sent> = Vec::new();
        let mut lines = lines.into_iter();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("send ") else {
                continue;
            };
            if rest.contains("r=0") {
                sent.push(Sent {
                    receipt: Some(receipts.next().expect("a receipt per accepted send")),
                    error: None,
                });
            } else {
                let case = rest.rsplit("c=").next().unwrap().as_bytes()[0] - b'0';
                let text = if case == 4 || case == 5 {
                    String::new()
                } else {
                    lines.next().unwrap_or_default()
                };
                sent.push(Sent {
                    receipt: None,
                    error: Some((case, text)),
                });
            }
        }
        sent
    }

    fn record(&self, id: &str) -> OutboxRecord {
        self.app.delivery.outbox().get(id).unwrap().expect("stored")
    }

    fn parts(&self, id: &str) -> Vec<PartRecord> {
        self.app.delivery.outbox().parts(id).unwrap()
    }

    /// Waits for a message's final state and its finished report.
    async fn done(&self, id: &str) -> (OutboxRecord, Finished) {
        let open = self
            .app
            .delivery
            .wait_for(&[id.to_string()], Duration::from_secs(30))
            .await;
        assert!(open.is_empty(), "{id} not final: {:?}", self.record(id));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = lock(&self.finished)
                .iter()
                .find(|f| f.receipt_id == id)
                .cloned();
            if let Some(f) = found {
                return (self.record(id), f);
            }
            assert!(Instant::now() < deadline, "no finished report for {id}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `check` holds for the stored record.
    async fn until(&self, id: &str, what: &str, check: impl Fn(&OutboxRecord) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(&self.record(id)) {
            assert!(
                Instant::now() < deadline,
                "{id}: {what}: {:?}",
                self.record(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// No secret in the host's logs, outbox, reports or plugin lines; no
    /// rate-limit violation at the simulator. Stops the workers.
    async fn audit(self) {
        self.audit_expecting(&[]).await
    }

    /// [`Host::audit`], with the simulator's violations expected to be
    /// exactly these (limit, code) pairs.
    async fn audit_expecting(self, violations: &[(&str, &str)]) {
        self.stop.cancel();
        self.workers.wait().await;
        harvest(&self.setup.tap_refs());
        let records = self
            .app
            .delivery
            .outbox()
            .list(&ListFilter {
                limit: 10_000,
                ..ListFilter::default()
            })
            .unwrap();
        assert!(!records.is_empty());
        for r in &records {
            assert_no_secret("an outbox record", &format!("{r:?}"));
            for p in self.parts(&r.id) {
                assert_no_secret("an outbox part", &format!("{p:?}"));
            }
        }
        for f in lock(&self.finished).iter() {
            assert_no_secret("a finished report", &format!("{f:?}"));
        }
        for line in lock(&self.plugin_lines).iter() {
            assert_no_secret("a plugin's log line", line);
        }
        assert_no_secret("the host's log", &captured_logs());
        let seen: Vec<(String, String)> = self
            .sim()
            .violations()
            .into_iter()
            .map(|v| (v.limit, v.code))
            .collect();
        let expected: Vec<(String, String)> = violations
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect();
        assert_eq!(seen, expected, "rate-limit violations");
    }
}

/// A chat message on `channel` in `conversation`, which the plugin may then
/// name in reply-to.
fn chat(channel: &str, conversation: &str) -> Event {
    Event::ChatMessage(ChatMessage {
        channel: channel.into(),
        conversation: conversation.into(),
        sender_id: "u1".into(),
        sender_name: None,
        text: "hi".into(),
        message_id: None,
        sent_at_ms: None,
    })
}

fn deliveries_with_text(sim: &Sim, provider: SimProvider, text: &str) -> Vec<SimDelivery> {
    sim.deliveries_to(provider)
        .into_iter()
        .filter(|d| d.text().as_deref() == Some(text))
        .collect()
}

fn assert_error_has(record: &OutboxRecord, needle: &str) {
    let e = record.last_error.as_deref().unwrap_or("");
    assert!(e.contains(needle), "last_error {e:?} lacks {needle:?}");
}

#[test]
fn the_secret_check_catches_a_leak() {
    add_secret("test-only-secret-9f8e7d");
    let leak = std::panic::catch_unwind(|| {
        assert_no_secret("a line", "… auth=test-only-secret-9f8e7d&x=1");
    });
    assert!(leak.is_err());
    assert_no_secret("a line", "… auth=[redacted]&x=1");
    let found = values_after(
        "GET /v4/x?sdkappid=1&usersig=eJw*ab-c_&random=7 HTTP/1.1\r\nauthorization: Bearer YWMtabc\r\n",
        "usersig=",
        |c| c == '&',
    );
    assert_eq!(found, vec!["eJw*ab-c_".to_string()]);
}

// ---------------------------------------------------------------------------
// BigBlueButton

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigbluebutton_running_meetings_listed_meetings_and_long_text() {
    let setup = Setup::start(SimConfig::demo(), 50.0).await;
    let providers = setup.bbb("bbb", &setup.cfg().bbb.secret.clone());
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
sender = "Campus Bot"
[channels.bbb-list]
provider = "bbb"
target = { meetings = ["room-2"] }
[channels.bbb-mixed]
provider = "bbb"
target = { meetings = ["room-1", "room-idle"] }
"#;
    let long: String = (1..=260)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(long.chars().count() > 1500);
    let steps = vec![
        vec![
            text_to("bbb-all", "Hello, every running room"),
            json!({ "channel": "bbb-list", "content": { "text": long }, "sender": "Lecturer" }),
            text_to("bbb-mixed", "Only live rooms get this"),
        ],
        vec![text_to("bbb-all", "Anyone there?")],
    ];
    // The example greeter bot answers a meeting event into that meeting.
    let greeter = format!(
        "[channels.lobby]\nprovider = \"bbb\"\ntarget = {{ meetings = \"all-running\" }}\n\
         [plugins.greeter]\npath = {}\nchannels = [\"lobby\"]\nevents = [\"meeting\", \"custom\"]\n\
         settings = {{ greeting = \"Hello {{name}}, welcome to {{meeting}}\", sender = \"Greeter\" }}\n",
        toml_str(&support::example_plugin("greeter").display().to_string())
    );
    let host = Host::start_with(setup, &providers, channels, &steps, &greeter).await;
    let sim = host.sim();
    let sent = host.step(0).await;

    // all-running: getMeetings, then every running meeting but room-idle.
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Hello, every running room");
    let mut rooms: Vec<Target> = got.iter().map(|d| d.target.clone()).collect();
    rooms.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(
        rooms,
        vec![
            Target::Meeting {
                id: "room-1".into()
            },
            Target::Meeting {
                id: "room-2".into()
            }
        ]
    );
    assert!(
        got.iter()
            .all(|d| d.sender.as_deref() == Some("Campus Bot"))
    );
    // sendChatMessage answers no message id.
    assert!(
        fin.provider_ids.is_empty() && fin.detail.is_none(),
        "{fin:?}"
    );
    assert_eq!(host.parts(&rec.id).len(), 2);
    assert!(
        sim.requests_to(SimProvider::Bbb)
            .iter()
            .any(|r| r.endpoint == endpoints::BBB_GET_MEETINGS && r.outcome == Outcome::Ok)
    );

    // A long text: ordered parts of at most 500 characters, nothing lost.
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let parts: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Bbb)
        .into_iter()
        .filter(|d| {
            d.text()
                .is_some_and(|t| t.starts_with("word") || t.contains(" word"))
        })
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    assert_eq!(host.parts(&rec.id).len(), parts.len());
    for d in &parts {
        assert_eq!(
            d.target,
            Target::Meeting {
                id: "room-2".into()
            }
        );
        assert_eq!(d.sender.as_deref(), Some("Lecturer"));
        assert!(d.text().unwrap().encode_utf16().count() <= 500);
    }
    assert!(parts.windows(2).all(|w| w[0].seq < w[1].seq));
    let joined: Vec<String> = parts
        .iter()
        .flat_map(|d| {
            d.text()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let original: Vec<&str> = long.split_whitespace().collect();
    assert_eq!(joined, original);

    // A listed meeting that is not running: that part fails with
    // meetingNotFound, the other is delivered.
    let (rec, fin) = host.done(&sent[2].id()).await;
    assert_eq!(rec.state, MessageState::Partial, "{rec:?}");
    let parts = host.parts(&rec.id);
    assert_eq!(parts[0].state, PartState::Delivered);
    assert_eq!(parts[1].state, PartState::Failed);
    assert_eq!(parts[1].part.target, "room-idle");
    assert!(
        parts[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("meetingNotFound:")),
        "{:?}",
        parts[1]
    );
    assert_error_has(&rec, "room-idle: meetingNotFound");
    assert!(
        fin.detail
            .as_deref()
            .is_some_and(|d| d.contains("room-idle: meetingNotFound")),
        "{fin:?}"
    );
    assert_eq!(fin.state, MessageState::Partial);
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Only live rooms get this");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].target,
        Target::Meeting {
            id: "room-1".into()
        }
    );

    // The greeter bot hears a meeting event and replies into that meeting
    // (reply-to) rather than to every running one.
    let joined = Event::Meeting(MeetingEvent {
        channel: "lobby".into(),
        kind: MeetingEventKind::UserJoined,
        meeting_id: "room-2".into(),
        meeting_name: Some("Sim Lecture Hall".into()),
        user_id: Some("u1".into()),
        user_name: Some("Ada".into()),
    });
    let receipts = host.dispatch("greeter", &joined).await;
    assert_eq!(receipts.len(), 1);
    let (rec, _) = host.done(&receipts[0]).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(
        sim,
        SimProvider::Bbb,
        "Hello Ada, welcome to Sim Lecture Hall",
    );
    assert_eq!(got.len(), 1, "{:?}", sim.deliveries());
    assert_eq!(
        got[0].target,
        Target::Meeting {
            id: "room-2".into()
        }
    );
    assert_eq!(got[0].sender.as_deref(), Some("Greeter"));

    // No sender anywhere: no userName, and the server shows its default.
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Only live rooms get this");
    assert_eq!(got[0].sender.as_deref(), Some("System"));

    // No meetings at all: delivered to nobody, which is not an error.
    for m in sim.bbb_meetings() {
        assert!(sim.bbb_remove_meeting(&m.id));
    }
    let before = sim.deliveries_to(SimProvider::Bbb).len();
    let sent = host.step(1).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.last_error, None);
    assert!(host.parts(&rec.id).is_empty());
    assert!(fin.provider_ids.is_empty() && fin.detail.is_none());
    assert_eq!(sim.deliveries_to(SimProvider::Bbb).len(), before);
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Tencent Cloud Chat

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_text_custom_dedup_retries_and_refusals() {
    // One call a second at the simulator: a second is 200 ms real here.
    let setup = Setup::start(windows_sim(), 5.0).await;
    let providers = setup.tencent("tc", &setup.cfg().tencent.secret_key.clone());
    let channels = "[channels.tc]\nprovider = \"tc\"\nsender = \"news-bot\"\n";
    let steps = vec![
        vec![
            json!({ "channel": "tc", "content": { "text": "Tencent hello" }, "extra": "{\"k\":\"v\"}" }),
            json!({ "channel": "tc", "content": { "custom": { "event": "notification", "data": "{\"type\":1}" } }, "sender": "ops-bot" }),
        ],
        vec![text_to("tc", "Tencent lost response")],
        vec![text_to("tc", "Tencent after 10023")],
        vec![text_to("tc", "Tencent after 502 and a drop")],
        vec![text_to("tc", "Tencent switch off")],
        vec![
            json!({ "channel": "tc", "content": { "text": "into one group" }, "reply-to": "@TGS#a" }),
            json!({ "channel": "tc", "content": { "command": "refresh" } }),
            json!({ "channel": "tc", "content": { "text": "x" }, "sender": "not ascii é" }),
        ],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    // Text and custom content, with the sender as From_Account.
    let sent = host.step(0).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Tencent, "Tencent hello");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, Target::AllAvChatRooms);
    assert_eq!(got[0].sender.as_deref(), Some("news-bot"));
    assert_eq!(got[0].content["CloudCustomData"], "{\"k\":\"v\"}");
    assert_eq!(fin.provider_ids, vec![got[0].provider_id.clone()]);
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let custom: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Tencent)
        .into_iter()
        .filter(|d| d.content["MsgBody"][0]["MsgType"] == "TIMCustomElem")
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].sender.as_deref(), Some("ops-bot"));
    assert_eq!(
        custom[0].content["MsgBody"][0]["MsgContent"],
        json!({ "Data": "{\"type\":1}", "Desc": "notification" })
    );
    // The UserSig was accepted: every request so far delivered.
    let requests = sim.requests_to(SimProvider::Tencent);
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.outcome == Outcome::Delivered));

    // The answer is lost after the message went out: the retry reuses the
    // part's Random, so the simulator discards it and answers with the
    // original MsgSeq. Exactly one delivery.
    sim.inject(SimProvider::Tencent, Fault::LostResponse, 1);
    let sent = host.step(1).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2);
    let got = deliveries_with_text(sim, SimProvider::Tencent, "Tencent lost response");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        sim.deduplicated(),
        1,
        "{:#?}\n{rec:?}",
        sim.requests_to(SimProvider::Tencent)
    );
    assert_eq!(fin.provider_ids, vec![got[0].provider_id.clone()]);
    let part = &host.parts(&rec.id)[0];
    assert_eq!(
        part.part.dedup_key.as_deref(),
        Some(got[0].content["Random"].to_string().as_str())
    );

    // 10023 (too frequent): retried, then delivered.
    sim.inject(SimProvider::Tencent, Fault::RateLimited, 1);
    let sent = host.step(2).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2);
    assert_error_has(&rec, "10023");
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Tencent, "Tencent after 10023").len(),
        1
    );

    // A 502 from a proxy, then a dropped connection: retried, delivered.
    sim.inject(SimProvider::Tencent, Fault::server_error(502), 1);
    sim.inject(SimProvider::Tencent, Fault::Drop, 1);
    let sent = host.step(3).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 3);
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Tencent, "Tencent after 502 and a drop").len(),
        1
    );
    let faulted: Vec<Option<Fault>> = sim
        .requests_to(SimProvider::Tencent)
        .into_iter()
        .filter(|r| r.outcome == Outcome::Faulted)
        .map(|r| r.fault)
        .collect();
    assert_eq!(
        faulted,
        vec![
            Some(Fault::RateLimited),
            Some(Fault::server_error(502)),
            Some(Fault::Drop)
        ]
    );

    // 10007 (the console switch is off): refused for good, with its code.
    sim.tencent_set_broadcast_enabled(false);
    let sent = host.step(4).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("10007: ")),
        "{rec:?}"
    );
    assert!(fin.detail.as_deref().is_some_and(|d| d.contains("10007")));
    assert_eq!(fin.state, MessageState::Failed);
    sim.tencent_set_broadcast_enabled(true);

    // A reply into a group the plugin heard from goes to that one group
    // with send_group_msg. Refused at send-broadcast time, before anything
    // is stored: a command, a sender that is no UserID.
    let sent = host.step_on(5, &chat("tc", "@TGS#a")).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.endpoint, "tc/send_group_msg");
    let got = deliveries_with_text(sim, SimProvider::Tencent, "into one group");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].target,
        Target::Group {
            id: "@TGS#a".into()
        }
    );
    let cases: Vec<u8> = sent[1..]
        .iter()
        .map(|s| s.error.clone().unwrap().0)
        .collect();
    assert_eq!(cases, vec![UNSUPPORTED, INVALID], "{sent:?}");
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Easemob

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_three_targets_share_one_token() {
    // 1 per second on chat rooms: a second is 200 ms real here.
    let setup = Setup::start(windows_sim(), 5.0).await;
    let providers = setup.easemob("em", &setup.cfg().easemob.client_secret.clone());
    let channels = r#"
[channels.em-all]
provider = "em"
target = "all-users"
sender = "sysadmin"
[channels.em-online]
provider = "em"
target = "online-users"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
priority = "high"
"#;
    let steps = vec![vec![
        json!({ "channel": "em-all", "content": { "text": "to all users" }, "extra": "{\"extKey\":\"extValue\"}" }),
        text_to("em-online", "to online users"),
        text_to("em-rooms", "to rooms, high"),
        json!({ "channel": "em-rooms", "content": { "text": "to rooms, low" }, "options": { "priority": "low" } }),
        json!({ "channel": "em-rooms", "content": { "custom": { "event": "poll/open", "data": "{\"q\":\"lunch?\"}" } }, "sender": "poll-bot" }),
    ]];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let sent = host.step(0).await;
    for s in &sent {
        let (rec, _) = host.done(&s.id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
        assert_eq!(rec.attempts, 1);
    }
    let one = |text: &str| {
        let got = deliveries_with_text(sim, SimProvider::Easemob, text);
        assert_eq!(got.len(), 1, "{text}: {got:?}");
        got[0].clone()
    };
    let d = one("to all users");
    assert_eq!(d.target, Target::AllUsers);
    assert_eq!(d.sender.as_deref(), Some("sysadmin"));
    assert_eq!(d.content["ext"], json!({ "extKey": "extValue" }));
    let d = one("to online users");
    assert_eq!(d.target, Target::OnlineUsers);
    assert_eq!(d.sender.as_deref(), Some("admin"));
    assert_eq!(
        one("to rooms, high").target,
        Target::ActiveChatRooms {
            level: "high".into()
        }
    );
    assert_eq!(
        one("to rooms, low").target,
        Target::ActiveChatRooms {
            level: "low".into()
        }
    );
    let custom: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Easemob)
        .into_iter()
        .filter(|d| d.content["msg"]["type"] == "custom")
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].sender.as_deref(), Some("poll-bot"));
    assert_eq!(custom[0].content["msg"]["customEvent"], "poll/open");
    assert_eq!(
        custom[0].content["msg"]["customExts"],
        json!({ "q": "lunch?" })
    );
    // Three endpoint workers sent at once; one token fetch served them all.
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 1);
    host.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_401_429_5xx_daily_quota_and_invalid_bodies() {
    let mut cfg = windows_sim();
    cfg.easemob.daily_chatrooms = 4;
    let setup = Setup::start(cfg, 5.0).await;
    let providers = setup.easemob("em", &setup.cfg().easemob.client_secret.clone());
    let channels = "[channels.em-rooms]\nprovider = \"em\"\ntarget = \"chatrooms\"\n";
    let big = "y".repeat(4000);
    let steps = vec![
        vec![text_to("em-rooms", "room message 1")],
        vec![text_to("em-rooms", "room message 2")],
        vec![text_to("em-rooms", "room message 3")],
        vec![text_to("em-rooms", "room message 4")],
        vec![text_to("em-rooms", "room message 5")],
        vec![
            json!({ "channel": "em-rooms", "content": { "text": "ext is a list" }, "extra": "[1, 2]" }),
            json!({ "channel": "em-rooms", "content": { "custom": { "event": "poll", "data": "{\"n\": 1}" } } }),
            json!({ "channel": "em-rooms", "content": { "custom": { "event": "bad event!", "data": "" } } }),
            json!({ "channel": "em-rooms", "content": { "text": big }, "extra": format!("{{\"pad\":\"{}\"}}", "z".repeat(1500)) }),
        ],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    let sent = host.step(0).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered);
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 1);

    // The app token expired at the server: a 401, one new token, the same
    // send retried within the same attempt.
    sim.easemob_expire_tokens();
    let sent = host.step(1).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 2);
    assert!(
        sim.requests_to(SimProvider::Easemob)
            .iter()
            .any(|r| r.outcome
                == Outcome::Rejected {
                    status: 401,
                    code: "unauthorized".into()
                })
    );

    // 429: retried after the window, then delivered.
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_CHATROOMS,
        Fault::RateLimited,
        1,
    );
    let sent = host.step(2).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2);
    assert_error_has(&rec, "429");

    // A 503 and a dropped connection: retried, then delivered.
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_CHATROOMS,
        Fault::server_error(503),
        1,
    );
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_CHATROOMS,
        Fault::Drop,
        1,
    );
    let sent = host.step(3).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 3);
    for n in 1..=4 {
        assert_eq!(
            deliveries_with_text(sim, SimProvider::Easemob, &format!("room message {n}")).len(),
            1
        );
    }
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 2);

    // The daily quota (4 here) is used up: 403, quota exhausted until the
    // day resets. The message waits in the queue; retrying sooner is useless.
    let sent = host.step(4).await;
    let id = sent[0].id();
    host.until(&id, "a quota-exhausted retry", |r| {
        r.attempts >= 1 && r.state == MessageState::Queued
    })
    .await;
    let rec = host.record(&id);
    assert_error_has(&rec, "quota exhausted:");
    assert_error_has(&rec, "limit exceeded");
    // It waits until midnight UTC (the reset Easemob does not document),
    // not for a backoff. Checked unless midnight is too close to tell.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until_midnight_ms = (86_400 - unix % 86_400) * 1000;
    if (120_000..86_280_000).contains(&until_midnight_ms) {
        let now = host.app.delivery.clock().now_ms();
        assert!(
            rec.next_attempt_ms + 60_000 >= now + until_midnight_ms,
            "retries before the day resets: {rec:?}"
        );
    }
    assert!(
        sim.requests_to(SimProvider::Easemob)
            .iter()
            .any(|r| r.outcome
                == Outcome::Rejected {
                    status: 403,
                    code: "forbidden_op".into()
                })
    );
    assert!(deliveries_with_text(sim, SimProvider::Easemob, "room message 5").is_empty());
    assert!(host.app.delivery.cancel(&id).unwrap());
    assert_eq!(host.record(&id).state, MessageState::Cancelled);

    // Bodies the server would answer 400 are refused at send-broadcast
    // time: the plugin hears `invalid` and nothing is stored or sent.
    let requests = sim.requests_to(SimProvider::Easemob).len();
    let sent = host.step(5).await;
    for s in &sent {
        let (case, text) = s.error.clone().expect("refused");
        assert_eq!(case, INVALID, "{text}");
    }
    assert!(sent[0].error.as_ref().unwrap().1.contains("extra"));
    assert!(sent[1].error.as_ref().unwrap().1.contains("customExts"));
    assert!(sent[3].error.as_ref().unwrap().1.contains("bytes"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.requests_to(SimProvider::Easemob).len(), requests);
    // The simulator's quota was lowered below the documented one the host
    // throttles to, so the 403 it answered counts as the one violation.
    host.audit_expecting(&[("4 per day", "403")]).await;
}

// ---------------------------------------------------------------------------
// Bitrix24

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_webhook_oauth_refresh_and_errors() {
    let setup = Setup::start(SimConfig::demo(), 20.0).await;
    let providers = format!(
        "{}{}",
        setup.bitrix_webhook("b24", &setup.cfg().bitrix.webhook_code.clone()),
        setup.bitrix_oauth(
            "b24o",
            &setup.cfg().bitrix.access_token.clone(),
            &setup.cfg().bitrix.refresh_token.clone()
        )
    );
    let channels = r#"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat13", "1"] }
[channels.bxo]
provider = "b24o"
target = { dialogs = ["chat1"] }
[channels.bx-bad]
provider = "b24"
target = { dialogs = ["chat1", "chat99"] }
"#;
    let steps = vec![
        vec![
            json!({ "channel": "bx", "content": { "text": "Bitrix hello" },
                    "options": { "system": true, "url-preview": false,
                                 "keyboard": "[{\"TEXT\":\"OK\",\"COMMAND\":\"ok\"}]" } }),
            text_to("bxo", "OAuth hello"),
        ],
        vec![text_to("bxo", "OAuth after expiry")],
        vec![text_to("bx", "after QUERY_LIMIT_EXCEEDED")],
        vec![text_to("bxo", "after 502 and a drop")],
        vec![text_to("bx-bad", "one good chat, one unknown")],
        vec![json!({ "channel": "bx", "content": { "text": "x" }, "reply-to": "chatX" })],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    // Webhook: a chat and a private dialog, with the options as sent.
    let sent = host.step(0).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(fin.provider_ids.len(), 2);
    let got = deliveries_with_text(sim, SimProvider::Bitrix, "Bitrix hello");
    let targets: Vec<Target> = got.iter().map(|d| d.target.clone()).collect();
    assert_eq!(
        targets,
        vec![Target::Chat { id: 13 }, Target::User { id: 1 }]
    );
    for d in &got {
        assert_eq!(d.sender.as_deref(), Some("1"));
        assert_eq!(d.content["SYSTEM"], "Y");
        assert_eq!(d.content["URL_PREVIEW"], "N");
        assert!(d.content.get("KEYBOARD").is_some(), "{d:?}");
    }
    // OAuth: the configured access token.
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Bitrix, "OAuth hello");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, Target::Chat { id: 1 });
    assert_eq!(sim.token_fetches(SimProvider::Bitrix), 0);

    // expired_token: one refresh, the send retried within the attempt.
    sim.bitrix_expire_access_tokens();
    let sent = host.step(1).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert_eq!(sim.token_fetches(SimProvider::Bitrix), 1);
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Bitrix, "OAuth after expiry").len(),
        1
    );
    assert!(
        sim.requests_to(SimProvider::Bitrix)
            .iter()
            .any(|r| r.outcome
                == Outcome::Rejected {
                    status: 401,
                    code: "expired_token".into()
                })
    );

    // QUERY_LIMIT_EXCEEDED on the first of two dialogs: retried, and only
    // the part still queued is sent again.
    sim.inject(SimProvider::Bitrix, Fault::RateLimited, 1);
    let sent = host.step(2).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_error_has(&rec, "QUERY_LIMIT_EXCEEDED");
    assert_eq!(rec.attempts, 3);
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Bitrix, "after QUERY_LIMIT_EXCEEDED").len(),
        2
    );

    // A 502 and a dropped connection: retried, then delivered.
    sim.inject(SimProvider::Bitrix, Fault::server_error(502), 1);
    sim.inject(SimProvider::Bitrix, Fault::Drop, 1);
    let sent = host.step(3).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 3);
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Bitrix, "after 502 and a drop").len(),
        1
    );

    // ACCESS_ERROR for a chat the bot is not in: that part fails with the code.
    let sent = host.step(4).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Partial, "{rec:?}");
    assert_error_has(&rec, "chat99: ACCESS_ERROR");
    assert!(fin.detail.as_deref().unwrap().contains("ACCESS_ERROR"));
    let parts = host.parts(&rec.id);
    assert_eq!(parts[1].state, PartState::Failed);
    assert!(
        parts[1]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("ACCESS_ERROR:")
    );

    // A reply-to that is no DIALOG_ID: invalid at send-broadcast time.
    let sent = host.step_on(5, &chat("bx", "chatX")).await;
    assert_eq!(sent[0].error.as_ref().unwrap().0, INVALID);
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Credentials the providers refuse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_with_the_provider_code_and_never_leak() {
    // Only backoff has to pass here: ten attempts over ~10 simulated minutes.
    let setup = Setup::start(SimConfig::demo(), 1000.0).await;
    let providers = [
        setup.bbb("bbb", "wrong-bbb-secret-1d2e3f4a5b6c"),
        setup.tencent("tc", "wrong-tencent-key-0a9b8c7d6e5f4a3b2c1d"),
        setup.easemob("em", "YXA6wrongClientSecret0botbox77"),
        setup.bitrix_webhook("b24", "wrongwebhookc0de99"),
        // A refused access token leads to one refresh (another host may
        // have replaced the pair), which the portal refuses in turn.
        setup.bitrix_oauth(
            "b24o",
            "bogus-bitrix-access-7777",
            "bogus-bitrix-refresh-8888",
        ),
    ]
    .concat();
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
[channels.bbb-list]
provider = "bbb"
target = { meetings = ["room-1"] }
[channels.tc]
provider = "tc"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat1"] }
[channels.bxo]
provider = "b24o"
target = { dialogs = ["chat1"] }
"#;
    let channels_and_codes = [
        ("bbb-all", "checksumError"),
        ("bbb-list", "checksumError"),
        ("tc", "70009"),
        ("em-rooms", "invalid_grant"),
        ("bx", "INVALID_CREDENTIALS"),
        ("bxo", "invalid_grant"),
    ];
    let steps = vec![
        channels_and_codes
            .iter()
            .map(|(c, _)| text_to(c, &format!("never delivered via {c}")))
            .collect(),
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let sent = host.step(0).await;
    for (s, (channel, code)) in sent.iter().zip(channels_and_codes) {
        let (rec, fin) = host.done(&s.id()).await;
        assert_eq!(rec.state, MessageState::Failed, "{channel}: {rec:?}");
        assert_eq!(fin.state, MessageState::Failed, "{channel}: {fin:?}");
        assert_eq!(rec.attempts, 10, "{channel}: {rec:?}");
        assert_error_has(&rec, "credentials refused: ");
        assert_error_has(&rec, code);
        assert!(
            fin.detail.as_deref().is_some_and(|d| d.contains(code)),
            "{channel}: {fin:?}"
        );
    }
    assert!(sim.deliveries().is_empty(), "{:?}", sim.deliveries());
    host.audit().await;
}

// ---------------------------------------------------------------------------
// The botbox binary: check, call and outbox list against the simulators.

async fn botbox(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(args)
        .current_dir(dir)
        .env("BOTBOX_LOG", "debug")
        .output()
        .await
        .expect("run botbox");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_check_call_and_outbox_list_show_no_secret() {
    let setup = Setup::start(windows_sim(), 5.0).await;
    let c = setup.cfg().clone();
    let providers = [
        setup.bbb("bbb", &c.bbb.secret),
        setup.tencent("tc", &c.tencent.secret_key),
        setup.easemob("em", &c.easemob.client_secret),
        setup.bitrix_webhook("b24", &c.bitrix.webhook_code),
    ]
    .concat();
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
[channels.tc]
provider = "tc"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat99"] }
"#;
    let steps = vec![vec![
        text_to("bbb-all", "cli to bbb"),
        text_to("tc", "cli to tencent"),
        text_to("em-rooms", "cli to easemob"),
        text_to("bx", "cli to an unknown bitrix chat"),
    ]];
    let config = setup.write_config(&providers, channels, &steps, "");
    let config = config.to_str().unwrap();
    let dir = setup.dir.path();
    let sim = &setup.sim;

    let (code, out) = botbox(dir, &["check", "--config", config]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is valid"), "{out}");
    assert_no_secret("botbox check", &out);

    sim.inject(SimProvider::Tencent, Fault::server_error(502), 1);
    let (code, out) = botbox(
        dir,
        &[
            "call",
            "step0",
            "--config",
            config,
            "--event",
            r#"{"name": "go"}"#,
            "--wait",
            "30s",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let reports: Vec<&str> = out.lines().filter(|l| l.starts_with("deliv ")).collect();
    assert_eq!(reports.len(), 4, "{out}");
    assert_eq!(
        reports.iter().filter(|l| l.contains(": delivered")).count(),
        3,
        "{out}"
    );
    assert!(
        reports
            .iter()
            .any(|l| l.contains("#bx: failed") && l.contains("chat99: ACCESS_ERROR")),
        "{out}"
    );
    assert!(out.contains("will retry"), "{out}");
    let seen = harvest(&setup.tap_refs());
    assert!(
        seen.iter().any(|(k, _)| *k == "tencent usersig"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|(k, _)| *k == "bearer"), "{seen:?}");
    assert_no_secret("botbox call", &out);
    assert_eq!(sim.deliveries().len(), 4, "{:?}", sim.deliveries());

    let (code, out) = botbox(dir, &["outbox", "--config", config, "list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ACCESS_ERROR"), "{out}");
    assert_no_secret("botbox outbox list", &out);
    assert_eq!(sim.violations(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_never_echo_a_secret() {
    let setup = Setup::start(SimConfig::demo(), 1.0).await;
    // A webhook code pasted with a slash, and a URL carrying a password.
    let providers = format!(
        "{}[providers.bbb]\nkind = \"bigbluebutton\"\nurl = \"http://admin:hunter2hunter2@127.0.0.1/bigbluebutton/api\"\nsecret = {}\n",
        setup.bitrix_webhook("b24", "simwebhook0c0de7x2/extra"),
        setup.secret("bbb-secret", "sim-bbb-secret-8f3c1e0b7a5d"),
    );
    add_secret("hunter2hunter2");
    let channels = "[channels.bx]\nprovider = \"b24\"\ntarget = { dialogs = [\"chat1\"] }\n";
    let config = setup.write_config(&providers, channels, &[vec![text_to("bx", "x")]], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let err = match Config::parse(&text, &config, setup.dir.path()).map(App::build) {
        Ok(Ok(_)) => panic!("a broken config was accepted"),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("webhook.code") && err.contains("url"), "{err}");
    assert_no_secret("a config error", &err);
    let (code, out) = botbox(
        setup.dir.path(),
        &["check", "--config", config.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("webhook.code"), "{out}");
    assert_no_secret("botbox check on a broken config", &out);
}
