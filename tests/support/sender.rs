//! The plugin the provider tests drive: it sends the messages it was built
//! with through `send-broadcast` and logs what each call answered, then dumps
//! its linear memory into kv so the test can scan it for secrets.
//!
//! Messages are laid out as the canonical ABI wants them, from JSON shaped
//! like the WIT `message` record.

use std::sync::OnceLock;

use botbox::app::App;
use serde_json::{Value, json};
use wit_parser::{Int, Resolve, SizeAlign, Type, TypeDefKind, TypeId};

use super::{Ask, Data, SEND_RET, WatPlugin};

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
        let text = std::fs::read_to_string(super::repo_root().join("wit/bot.wit")).unwrap();
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
pub fn sender_plugin(channels: &[&str], messages: &[Value]) -> Vec<u8> {
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
pub fn guest_memory(app: &App, plugin: &str) -> String {
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

/// A text message to `channel`, as `send-broadcast` takes it.
pub fn text_to(channel: &str, text: &str) -> Value {
    json!({ "channel": channel, "content": { "text": text } })
}

/// `broadcast-error` case numbers, as the WIT orders them.
pub const INVALID: u8 = 2;
pub const UNSUPPORTED: u8 = 3;

/// What one `send-broadcast` call answered.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The receipt id, when the call was accepted.
    pub receipt: Option<String>,
    /// The `broadcast-error` case and its text, when refused.
    pub error: Option<(u8, String)>,
}

impl Sent {
    pub fn id(&self) -> String {
        self.receipt
            .clone()
            .unwrap_or_else(|| panic!("send-broadcast was refused: {:?}", self.error))
    }
}
