//! Shared helpers for the integration tests: components built in-process
//! from WAT, and a host built from a config written on the fly.
#![allow(dead_code)]

pub mod busy;
pub mod host;
pub mod http_server;
pub mod registry;
pub mod secrets;
pub mod sender;
pub mod sims;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use botbox::app::App;
use botbox::config::Config;
use botbox::wit::types::{Content, Message};
use wit_parser::{Resolve, SizeAlign, Type, TypeDefKind};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The host workspace's target dir, found as `cargo xtask` finds it:
/// `CARGO_TARGET_DIR` (relative to the root) when set, else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// The WIT package of a served version (`wit/bot.wit` for 0.1.0,
/// `wit/0.2.0/bot.wit` for 0.2.0), or 0.1.0's re-versioned to build
/// "foreign" components.
fn resolve_with_version(version: &str) -> (Resolve, wit_parser::WorldId) {
    let text = if version == "0.2.0" {
        std::fs::read_to_string(repo_root().join("wit/0.2.0/bot.wit"))
            .expect("read wit/0.2.0/bot.wit")
    } else {
        let text =
            std::fs::read_to_string(repo_root().join("wit/bot.wit")).expect("read wit/bot.wit");
        text.replace("@0.1.0", &format!("@{version}"))
    };
    let mut resolve = Resolve::default();
    let pkg = resolve
        .push_str("bot.wit", &text)
        .expect("wit/bot.wit parses");
    let world = resolve
        .select_world(&[pkg], Some("bot"))
        .expect("world bot");
    (resolve, world)
}

/// Lays out data segments in guest memory, returning their addresses.
pub struct Data {
    next: u32,
    segments: Vec<(u32, Vec<u8>)>,
}

impl Data {
    fn new(start: u32) -> Data {
        Data {
            next: start,
            segments: Vec::new(),
        }
    }

    pub fn bytes(&mut self, bytes: &[u8], align: u32) -> u32 {
        let addr = self.next.div_ceil(align) * align;
        self.segments.push((addr, bytes.to_vec()));
        self.next = addr + bytes.len() as u32;
        addr
    }

    /// A string as the canonical ABI passes it: (ptr, len).
    pub fn string(&mut self, s: &str) -> (u32, u32) {
        (self.bytes(s.as_bytes(), 1), s.len() as u32)
    }

    fn list_of_strings(&mut self, items: &[&str]) -> (u32, u32) {
        let mut table = Vec::new();
        for s in items {
            let (p, l) = self.string(s);
            table.extend_from_slice(&p.to_le_bytes());
            table.extend_from_slice(&l.to_le_bytes());
        }
        (self.bytes(&table, 4), items.len() as u32)
    }

    fn wat(&self) -> String {
        let mut out = String::new();
        for (addr, bytes) in &self.segments {
            let _ = write!(out, "(data (i32.const {addr}) \"");
            for b in bytes {
                let _ = write!(out, "\\{b:02x}");
            }
            out.push_str("\")\n");
        }
        out
    }
}

/// What a WAT test plugin asks for in `describe`.
pub struct Ask<'a> {
    pub channels: &'a [&'a str],
    /// Event-kind enum indices: 0 chat-message, 1 meeting, 2 schedule, 3 delivery, 4 custom.
    pub events: &'a [u8],
    pub schedules: &'a [&'a str],
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Ask {
            channels: &["lobby"],
            events: &[2, 3, 4],
            schedules: &[],
        }
    }
}

/// A WAT plugin: `handle`'s body (locals `$i` and `$r` are declared), extra
/// functions, and messages laid out for `send-broadcast`.
pub struct WatPlugin<'a> {
    pub ask: Ask<'a>,
    pub handle_body: String,
    pub extra_funcs: String,
    pub version: &'a str,
    /// Trap in `describe` instead of answering.
    pub trap_in_describe: bool,
    pub data: Data,
    /// Extra core imports, in WAT, such as `botbox:bot/kv` functions.
    pub imports: String,
    /// Extra WIT packages and the interfaces of theirs the component
    /// imports beside the `bot` world's (WASI interfaces the host must refuse
    /// or deny).
    pub foreign: Option<(Vec<String>, Vec<String>)>,
    /// Leave out the `log` and `send-broadcast` imports (the body must not
    /// call them): a component with no botbox imports, to nest in another.
    pub no_host_imports: bool,
    /// Hosts asked for in a 0.2.0 manifest's `http` (see [`WatPlugin::http`]).
    pub http: &'a [&'a str],
    /// Laid out once, from the WIT, for `text_message`.
    layout: MessageLayout,
}

struct MessageLayout {
    size: usize,
    content_offset: usize,
    text_payload_offset: usize,
}

fn message_layout(resolve: &Resolve) -> MessageLayout {
    let mut sizes = SizeAlign::default();
    sizes.fill(resolve);
    let message = resolve
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("message"))
        .map(|(_, t)| t)
        .expect("message type");
    let TypeDefKind::Record(record) = &message.kind else {
        panic!("message is a record")
    };
    let offsets = sizes.field_offsets(record.fields.iter().map(|f| &f.ty));
    let content_index = record
        .fields
        .iter()
        .position(|f| f.name == "content")
        .expect("content");
    let content_offset = offsets[content_index].0.size_wasm32();
    let Type::Id(content_id) = record.fields[content_index].ty else {
        panic!("content is a named type")
    };
    let TypeDefKind::Variant(variant) = &resolve.types[content_id].kind else {
        panic!("content is a variant")
    };
    let payload = sizes
        .payload_offset(variant.tag(), variant.cases.iter().map(|c| c.ty.as_ref()))
        .size_wasm32();
    let size = sizes.size(&Type::Id(
        resolve
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("message"))
            .map(|(id, _)| id)
            .expect("message"),
    ));
    MessageLayout {
        size: size.size_wasm32(),
        content_offset,
        text_payload_offset: content_offset + payload,
    }
}

/// Return area for `send-broadcast`'s result; byte 0 is 0 for ok, 1 for err,
/// and for err byte 8 is the broadcast-error case.
pub const SEND_RET: u32 = 60_000;

impl<'a> WatPlugin<'a> {
    pub fn new(ask: Ask<'a>) -> WatPlugin<'a> {
        let (resolve, _) = resolve_with_version("0.1.0");
        WatPlugin {
            ask,
            handle_body: String::new(),
            extra_funcs: String::new(),
            version: "0.1.0",
            trap_in_describe: false,
            data: Data::new(1024),
            imports: String::new(),
            foreign: None,
            no_host_imports: false,
            http: &[],
            layout: message_layout(&resolve),
        }
    }

    pub fn body(mut self, wat: &str) -> Self {
        self.handle_body = wat.to_string();
        self
    }

    pub fn funcs(mut self, wat: &str) -> Self {
        self.extra_funcs = wat.to_string();
        self
    }

    pub fn imports(mut self, wat: &str) -> Self {
        self.imports = wat.to_string();
        self
    }

    /// Imports `interfaces` of the WIT `packages` too.
    pub fn foreign(mut self, packages: &[&str], interfaces: &[&str]) -> Self {
        self.foreign = Some((
            packages.iter().map(|p| p.to_string()).collect(),
            interfaces.iter().map(|i| i.to_string()).collect(),
        ));
        self
    }

    pub fn without_host_imports(mut self) -> Self {
        self.no_host_imports = true;
        self
    }

    pub fn trap_in_describe(mut self) -> Self {
        self.trap_in_describe = true;
        self
    }

    /// Builds against `version`: `0.2.0` is the served 0.2.0 WIT (its
    /// manifest carries `http`), any other is 0.1.0's re-versioned.
    pub fn version(mut self, version: &'a str) -> Self {
        self.version = version;
        self
    }

    /// A 0.2.0 plugin that asks for these HTTP hosts in `describe`.
    pub fn http(mut self, hosts: &'a [&'a str]) -> Self {
        self.version = "0.2.0";
        self.http = hosts;
        self
    }

    /// Lays out a text message and returns its address, for `$send`.
    pub fn text_message(&mut self, channel: &str, text: &str) -> u32 {
        let (tp, tl) = self.data.string(text);
        self.text_message_at(channel, tp, tl)
    }

    /// A text message whose text is whatever lies at `tp..tp + tl` when it
    /// is sent (the body writes it, or the length lies).
    pub fn text_message_at(&mut self, channel: &str, tp: u32, tl: u32) -> u32 {
        let (cp, cl) = self.data.string(channel);
        let mut bytes = vec![0u8; self.layout.size];
        bytes[0..4].copy_from_slice(&cp.to_le_bytes());
        bytes[4..8].copy_from_slice(&cl.to_le_bytes());
        // The content tag stays 0: text.
        let p = self.layout.text_payload_offset;
        bytes[p..p + 4].copy_from_slice(&tp.to_le_bytes());
        bytes[p + 4..p + 8].copy_from_slice(&tl.to_le_bytes());
        assert_eq!(bytes[self.layout.content_offset], 0);
        self.data.bytes(&bytes, 8)
    }

    /// Builds the component.
    pub fn build(mut self) -> Vec<u8> {
        let (name_p, name_l) = self.data.string("wat-test");
        let (ver_p, ver_l) = self.data.string("1");
        let (ch_p, ch_l) = self.data.list_of_strings(self.ask.channels);
        let ev_p = self.data.bytes(self.ask.events, 1);
        let ev_l = self.ask.events.len() as u32;
        let (sc_p, sc_l) = self.data.list_of_strings(self.ask.schedules);
        let mut manifest = Vec::new();
        for v in [
            name_p, name_l, ver_p, ver_l, ch_p, ch_l, ev_p, ev_l, sc_p, sc_l,
        ] {
            manifest.extend_from_slice(&v.to_le_bytes());
        }
        if self.version == "0.2.0" {
            // 0.2.0's manifest ends with `http: list<string>`.
            let (http_p, http_l) = self.data.list_of_strings(self.http);
            manifest.extend_from_slice(&http_p.to_le_bytes());
            manifest.extend_from_slice(&http_l.to_le_bytes());
        }
        let manifest_addr = self.data.bytes(&manifest, 4);
        assert!(
            self.data.next < SEND_RET,
            "test data overlaps the return areas"
        );
        let v = self.version;
        let wat = format!(
            r#"(module
  {host_imports}
  {imports}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))) (i32.const -1))
        (then unreachable))))
    (local.get $ptr))
  (func (export "botbox:bot/handler@{v}#describe") (result i32)
    {describe_trap}
    (i32.const {manifest_addr}))
  (func (export "botbox:bot/handler@{v}#handle") (param i32) (result i32)
    (local $i i32) (local $r i32)
    {body}
    (i32.store8 (i32.const 60100) (i32.const 0))
    (i32.const 60100))
  {funcs}
  {data}
)"#,
            body = self.handle_body,
            describe_trap = if self.trap_in_describe {
                "unreachable"
            } else {
                ""
            },
            funcs = self.extra_funcs,
            host_imports = if self.no_host_imports {
                String::new()
            } else {
                format!(
                    r#"(import "botbox:bot/log@{v}" "log" (func $log (param i32 i32 i32)))
  (import "botbox:bot/broadcast@{v}" "send-broadcast" (func $send (param i32 i32)))"#
                )
            },
            imports = self.imports,
            data = self.data.wat(),
        );
        let mut module = wat::parse_str(&wat).unwrap_or_else(|e| panic!("WAT: {e}\n{wat}"));
        let (mut resolve, mut world) = resolve_with_version(v);
        if let Some((packages, interfaces)) = &self.foreign {
            for (i, text) in packages.iter().enumerate() {
                resolve
                    .push_str(format!("foreign{i}.wit"), text)
                    .unwrap_or_else(|e| panic!("foreign WIT: {e}\n{text}"));
            }
            let imports: String = interfaces
                .iter()
                .map(|i| format!("  import {i};\n"))
                .collect();
            let pkg = resolve
                .push_str(
                    "hostile.wit",
                    &format!(
                        "package test:hostile;\nworld hostile {{\n  include botbox:bot/bot@{v};\n{imports}}}\n"
                    ),
                )
                .expect("hostile world");
            world = resolve
                .select_world(&[pkg], Some("hostile"))
                .expect("world hostile");
        }
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .expect("embed metadata");
        wit_component::ComponentEncoder::default()
            .module(&module)
            .expect("module")
            .validate(true)
            .encode()
            .expect("encode component")
    }
}

/// WAT that calls send-broadcast on a laid-out message and traps unless the
/// result's ok/err byte equals `expect_err` (0 ok, 1 err).
pub fn send_and_expect(msg_addr: u32, expect_err: u8) -> String {
    format!(
        "(call $send (i32.const {msg_addr}) (i32.const {SEND_RET}))
         (if (i32.ne (i32.load8_u (i32.const {SEND_RET})) (i32.const {expect_err})) (then unreachable))"
    )
}

/// A plain text message to `channel`, as a plugin would hand it to
/// `send-broadcast`.
pub fn text_message(channel: &str, body: &str) -> Message {
    Message {
        channel: channel.into(),
        content: Content::Text(body.into()),
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    }
}

/// A test host: a temp dir with components and a config.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub app: App,
}

impl TestHost {
    /// `plugins` are (name, component bytes, extra TOML lines for the plugin).
    pub fn new(plugins: &[(&str, Vec<u8>, &str)]) -> TestHost {
        Self::with_top(plugins, |_| String::new())
    }

    /// Like `new`, with top-level config (such as `[storage]`) made from the
    /// host's temp dir.
    pub fn with_top(
        plugins: &[(&str, Vec<u8>, &str)],
        top: impl FnOnce(&Path) -> String,
    ) -> TestHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = top(dir.path());
        toml.push_str(
            "[providers.console]\nkind = \"console\"\n\
             [channels.lobby]\nprovider = \"console\"\n\
             [channels.secret-room]\nprovider = \"console\"\n",
        );
        for (name, bytes, extra) in plugins {
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).expect("write component");
            let _ = write!(
                toml,
                "[plugins.{name}]\npath = \"{name}.wasm\"\nchannels = [\"lobby\"]\n{extra}\n"
            );
        }
        let config = Config::parse(&toml, &dir.path().join("botbox.toml"), dir.path())
            .unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
        let app = App::build(config).expect("build app");
        TestHost { dir, app }
    }

    pub async fn load_all(&self) {
        let errors = self.app.load_plugins().await;
        assert!(errors.is_empty(), "load errors: {errors:?}");
    }
}

/// The example plugins built by `cargo xtask plugins`.
pub fn example_plugin(name: &str) -> PathBuf {
    let path = target_dir().join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the example plugins first with `cargo xtask plugins` \
         (`cargo xtask test` does it for you)",
        path.display()
    );
    path
}

/// A plugin that logs `line` on every event.
pub fn logs(line: &str) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let (ptr, len) = p.data.string(line);
    p.body(&format!(
        "(call $log (i32.const 2) (i32.const {ptr}) (i32.const {len}))"
    ))
    .build()
}

/// A plugin that logs `line` 20,000 times on every event.
pub fn log_flood(line: &str) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let (ptr, len) = p.data.string(line);
    p.body(&format!(
        "(loop $l
           (call $log (i32.const 2) (i32.const {ptr}) (i32.const {len}))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))"
    ))
    .build()
}

/// Writes a file the way build tools should: a temporary file, then a rename.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

// ---------------------------------------------------------------------------
// The host's log, captured: what `BOTBOX_LOG=debug` shows (the HTTP client's
// lines included) and botbox's own trace lines, without the compiler's
// chatter, for tests that scan it for secrets.

pub fn log_buffer() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let filter = "debug,botbox=trace,cranelift_codegen=info,wasmtime_internal_cranelift=info,\
                      wit_parser=info,wit_component=info";
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buffer
    })
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged since the first call of [`log_buffer`].
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&lock(log_buffer())).into_owned()
}

/// A lock that a panicking test thread did not poison for the others.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
