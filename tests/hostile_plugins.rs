//! Hostile plugins, built in-process from WAT: each attack is contained, and
//! a well-behaved neighbour's call made right after it still succeeds.

mod support;

use botbox::runtime::HandleError;
use botbox::wit::types::{CustomEvent, Event};
use support::{Ask, TestHost, WatPlugin, log_flood, send_and_expect};

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

/// Logs a line and sends "hello" to lobby; traps if the send fails.
fn neighbour() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let (line, len) = p.data.string("neighbour ok");
    let msg = p.text_message("lobby", "hello from the neighbour");
    let body = format!(
        "(call $log (i32.const 2) (i32.const {line}) (i32.const {len}))\n{}",
        send_and_expect(msg, 0)
    );
    p.body(&body).build()
}

const FAST: &str = "limits = { deadline_ms = 200, memory_mb = 8 }";

async fn host_with(hostile: Vec<u8>, hostile_extra: &str) -> TestHost {
    let host = TestHost::new(&[
        ("hostile", hostile, hostile_extra),
        ("neighbour", neighbour(), ""),
    ]);
    host.load_all().await;
    host
}

/// The neighbour still works, and its broadcast is accepted.
async fn assert_neighbour_fine(host: &TestHost) {
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    host.app
        .runtime
        .dispatch("neighbour", &poke())
        .await
        .expect("neighbour call succeeds right after the attack");
    let a = accepted
        .try_recv()
        .expect("neighbour's broadcast was accepted");
    assert_eq!(a.plugin, "neighbour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    let hostile = WatPlugin::new(Ask::default())
        .body("(loop $l (br $l))")
        .build();
    let host = host_with(hostile, FAST).await;
    let started = std::time::Instant::now();
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HandleError::Timeout {
            plugin: "hostile".into(),
            deadline_ms: 200
        }
    );
    // Stopped by the deadline, not left running: generous bound for noisy CI.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_neighbour_fine(&host).await;
    // The same plugin handles its next event too (and times out again).
    assert!(matches!(
        host.app.runtime.dispatch("hostile", &poke()).await,
        Err(HandleError::Timeout { .. })
    ));
    let stats = &host.app.runtime.plugin("hostile").unwrap().stats;
    assert_eq!(stats.timeouts.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_stops_at_the_cap() {
    let hostile = WatPlugin::new(Ask::default())
        .body(
            "(block $done (loop $l
               (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
               (br $l)))
             unreachable",
        )
        .build();
    let host = host_with(hostile, FAST).await;
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    match err {
        HandleError::OutOfMemory {
            plugin,
            wanted,
            cap,
        } => {
            assert_eq!(plugin, "hostile");
            assert_eq!(cap, 8 << 20);
            assert!(wanted > cap);
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_is_a_stack_overflow() {
    let hostile = WatPlugin::new(Ask::default())
        .body("(call $recurse (i32.const 0))")
        .funcs("(func $recurse (param i32) (call $recurse (i32.add (local.get 0) (i32.const 1))))")
        .build();
    let host = host_with(hostile, FAST).await;
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HandleError::Trap { message, .. } if message.contains("stack overflow")),
        "{err:?}"
    );
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_only_that_event() {
    let hostile = WatPlugin::new(Ask::default()).body("unreachable").build();
    let host = host_with(hostile, FAST).await;
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HandleError::Trap { message, .. } if message.contains("unreachable")),
        "{err:?}"
    );
    // wasmtime's Trap already says "wasm trap:"; the host adds no second one.
    assert_eq!(err.to_string().matches("wasm trap").count(), 1, "{err}");
    assert!(
        err.to_string().starts_with("plugin `hostile` crashed"),
        "{err}"
    );
    assert_neighbour_fine(&host).await;
    // And the hostile plugin is still loaded and callable.
    assert!(host.app.runtime.dispatch("hostile", &poke()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_rate_limited_and_escaped() {
    let hostile = log_flood("flood\x1b[2J\x1b]0;owned\x07\nFORGED LINE");
    let host = TestHost::new(&[
        ("hostile", hostile, "limits = { log_lines_per_second = 10 }"),
        ("neighbour", neighbour(), ""),
    ]);
    host.load_all().await;
    let mut logs = host.app.runtime.services().log_observers.subscribe();
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("flood completes");
    let sink = host
        .app
        .runtime
        .plugin("hostile")
        .unwrap()
        .context
        .slices
        .log
        .clone();
    assert!(sink.written() <= 11, "written {}", sink.written());
    assert!(sink.dropped() >= 19_000, "dropped {}", sink.dropped());
    let mut seen = 0;
    while let Ok(record) = logs.try_recv() {
        assert_eq!(record.plugin, "hostile");
        assert!(
            !record.message.chars().any(char::is_control),
            "{:?}",
            record.message
        );
        assert!(record.message.contains("\\u{1b}[2J"));
        seen += 1;
    }
    assert!((1..=11).contains(&seen), "{seen}");
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_outside_the_grants_are_refused() {
    let mut p = WatPlugin::new(Ask {
        channels: &["lobby", "secret-room"],
        ..Ask::default()
    });
    // Asked for but not granted by the operator.
    let not_granted = p.text_message("secret-room", "psst");
    // Never asked for.
    let unknown = p.text_message("ghost", "boo");
    // The case index of broadcast-error: 0 not-granted, 1 unknown-channel.
    let expect_case = |case: u8| {
        format!(
            "(if (i32.ne (i32.load8_u (i32.const {})) (i32.const {case})) (then unreachable))",
            support::SEND_RET + 8
        )
    };
    let body = format!(
        "{}\n{}\n{}\n{}",
        send_and_expect(not_granted, 1),
        expect_case(0),
        send_and_expect(unknown, 1),
        expect_case(1)
    );
    let hostile = p.body(&body).build();
    let host = host_with(hostile, "").await;
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("the plugin saw both refusals with the right error case");
    assert!(accepted.try_recv().is_err(), "nothing was accepted");
    let grants = &host.app.runtime.plugin("hostile").unwrap().context.grants;
    assert!(grants.channels.contains("lobby"));
    assert!(!grants.channels.contains("secret-room"));
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_as_invalid() {
    let mut p = WatPlugin::new(Ask::default());
    let huge = p.text_message("lobby", &"x".repeat(10_000));
    let body = format!(
        "{}\n(if (i32.ne (i32.load8_u (i32.const {tag})) (i32.const 2)) (then unreachable))",
        send_and_expect(huge, 1),
        tag = support::SEND_RET + 8,
    );
    let hostile = p.body(&body).build();
    let host = host_with(hostile, "").await;
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("the plugin saw `invalid`");
    assert!(accepted.try_recv().is_err(), "nothing was accepted");
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_spam_hits_the_budget() {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "spam");
    let hostile = p
        .body(&format!(
            "(loop $l
               (call $send (i32.const {msg}) (i32.const {ret}))
               (local.set $r (i32.add (local.get $r) (i32.load8_u (i32.const {ret}))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
             ;; 5 accepted, 95 refused
             (if (i32.ne (local.get $r) (i32.const 95)) (then unreachable))
             ;; the last refusal is quota-exhausted (case 4)
             (if (i32.ne (i32.load8_u (i32.const {tag})) (i32.const 4)) (then unreachable))",
            ret = support::SEND_RET,
            tag = support::SEND_RET + 8,
        ))
        .build();
    let host = host_with(hostile, "limits = { broadcasts_per_minute = 5 }").await;
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("exactly 5 accepted, the rest quota-exhausted");
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_refuses_calls_past_it() {
    let hostile = WatPlugin::new(Ask::default())
        .body("(loop $l (br $l))")
        .build();
    let host = host_with(
        hostile,
        "limits = { deadline_ms = 300, max_concurrency = 1 }",
    )
    .await;
    let runtime = host.app.runtime.clone();
    let first = tokio::spawn(async move { runtime.dispatch("hostile", &poke()).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The second is refused at once, without ever taking an instance.
    let second = host.app.runtime.dispatch("hostile", &poke()).await;
    assert!(
        matches!(second, Err(HandleError::Busy { max: 1, .. })),
        "{second:?}"
    );
    assert!(matches!(
        first.await.unwrap(),
        Err(HandleError::Timeout { .. })
    ));
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_granted_are_not_delivered() {
    let hostile = WatPlugin::new(Ask {
        events: &[0, 4],
        ..Ask::default()
    })
    .body("unreachable")
    .build();
    // The operator grants only custom events.
    let host = host_with(hostile, "events = [\"custom\"]").await;
    let err = host
        .app
        .runtime
        .dispatch("hostile", &Event::Schedule("tick".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HandleError::NotGranted {
            plugin: "hostile".into(),
            kind: "schedule"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_another_wit_version_is_refused_with_a_clear_error() {
    let foreign = WatPlugin::new(Ask::default()).version("0.9.0").build();
    let host = TestHost::new(&[("foreign", foreign, "")]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("built against WIT botbox:bot@0.9.0"),
        "{text}"
    );
    assert!(text.contains("botbox:bot@0.1.0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_module_is_refused_with_a_hint() {
    let core = wat::parse_str("(module)").unwrap();
    let host = TestHost::new(&[("core", core, "")]);
    let errors = host.app.load_plugins().await;
    let text = errors[0].to_string();
    assert!(
        text.contains("core WebAssembly module, not a component"),
        "{text}"
    );
}

// ---- strings, lists and storage far over every cap ----

/// The core signatures of the kv functions, as the canonical ABI flattens them.
const KV_IMPORTS: &str = r#"
  (import "botbox:bot/kv@0.1.0" "set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "botbox:bot/kv@0.1.0" "get" (func $kv_get (param i32 i32 i32)))
"#;

/// Return area for kv and WASI calls: byte 0 is the result's ok/err byte;
/// a kv-error's case is at byte 8 (the variant is 8-aligned for its u64).
const RET: u32 = 61_000;

/// A peak resident-set figure of this process, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status")
        * 1024
}

const HUGE: u32 = 60 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_and_lists_far_over_every_cap_are_refused() {
    let mut p = WatPlugin::new(Ask::default()).imports(KV_IMPORTS);
    // 60 MiB of text at 64 KiB: the message's text, the log line and the
    // kv value all point at it.
    let msg = p.text_message_at("lobby", 65_536, HUGE);
    let (key, key_len) = p.data.string("big");
    let body = format!(
        "(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
         (memory.fill (i32.const 65536) (i32.const 0x78) (i32.const {HUGE}))
         (call $log (i32.const 2) (i32.const 65536) (i32.const {HUGE}))
         ;; send-broadcast: err invalid (case 2)
         {send}
         (if (i32.ne (i32.load8_u (i32.const {send_case})) (i32.const 2)) (then unreachable))
         ;; kv set: err value-too-large (case 1)
         (call $kv_set (i32.const {key}) (i32.const {key_len}) (i32.const 65536) (i32.const {HUGE}) (i32.const {RET}))
         (if (i32.ne (i32.load8_u (i32.const {RET})) (i32.const 1)) (then unreachable))
         (if (i32.ne (i32.load8_u (i32.const {kv_case})) (i32.const 1)) (then unreachable))",
        pages = HUGE / 65_536,
        send = send_and_expect(msg, 1),
        send_case = support::SEND_RET + 8,
        kv_case = RET + 8,
    );
    let hostile = p.body(&body).build();
    let host = host_with(hostile, "").await;
    let mut logs = host.app.runtime.services().log_observers.subscribe();
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    let before = peak_rss();
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("the plugin saw `invalid` and `value-too-large`");
    let grown = peak_rss().saturating_sub(before);
    // The guest's own 60 MiB is resident (it wrote them). bindgen lifts a
    // `string` or `list` into an owned copy before the host function runs
    // (see SECURITY.md), so one copy of the largest argument may exist at a
    // time; more than that would be a leak or an amplification.
    eprintln!("peak RSS grew by {} MiB", grown >> 20);
    assert!(
        grown < 3 * u64::from(HUGE),
        "peak RSS grew by {} MiB",
        grown >> 20
    );
    let record = logs.try_recv().expect("the log line was written, cut");
    assert!(
        record.message.chars().count() < 2100,
        "{}",
        record.message.len()
    );
    assert!(record.message.contains("more chars]"), "{}", record.message);
    assert!(accepted.try_recv().is_err(), "nothing was accepted");
    let kv = host.app.runtime.services().kv;
    let limits = host
        .app
        .runtime
        .plugin("hostile")
        .unwrap()
        .context
        .slices
        .kv
        .limits;
    assert_eq!(kv.get("hostile", "big", &limits).unwrap(), None);
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_past_the_end_of_memory_traps_before_any_copy() {
    // The canonical ABI checks ptr + len against the memory's size before
    // anything is read: a 2 GiB "string" in a 128 KiB memory is a trap.
    let hostile = WatPlugin::new(Ask::default())
        .body("(call $log (i32.const 2) (i32.const 65536) (i32.const 0x7fffffff))")
        .build();
    let host = host_with(hostile, "").await;
    let before = peak_rss();
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HandleError::Trap { message, .. } if message.contains("out of bounds")),
        "{err:?}"
    );
    assert!(peak_rss().saturating_sub(before) < 16 << 20);
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_kv_stops_at_the_quota_and_spares_other_namespaces() {
    let mut p = WatPlugin::new(Ask::default()).imports(KV_IMPORTS);
    let (key, _) = p.data.string("k?");
    // Sets 4 KiB values under 100 keys; counts each outcome by its case.
    let hostile = p
        .body(&format!(
            "(loop $l
               (i32.store8 (i32.const {key_byte}) (i32.add (i32.const 0x30) (local.get $i)))
               (call $kv_set (i32.const {key}) (i32.const 2) (i32.const 65536) (i32.const 4096) (i32.const {RET}))
               (if (i32.eq (i32.load8_u (i32.const {RET})) (i32.const 1))
                 (then
                   ;; every refusal is quota-exceeded (case 2)
                   (if (i32.ne (i32.load8_u (i32.const {case})) (i32.const 2)) (then unreachable))
                   (local.set $r (i32.add (local.get $r) (i32.const 1)))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 70))))
             ;; 64 KiB holds 15 of them with their keys; the other 55 are refused
             (if (i32.ne (local.get $r) (i32.const 55)) (then unreachable))",
            key_byte = key + 1,
            case = RET + 8,
        ))
        .build();
    let host = host_with(hostile, "limits = { kv_max_total_kb = 64 }").await;
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("15 stored, 55 quota-exceeded");
    let kv = host.app.runtime.services().kv;
    let hostile_limits = host
        .app
        .runtime
        .plugin("hostile")
        .unwrap()
        .context
        .slices
        .kv
        .limits;
    let keys = kv.list_keys("hostile", "", 1000, &hostile_limits).unwrap();
    assert_eq!(keys.len(), 15);
    // The neighbour's namespace has its own, untouched quota.
    let neighbour_limits = host
        .app
        .runtime
        .plugin("neighbour")
        .unwrap()
        .context
        .slices
        .kv
        .limits;
    kv.set("neighbour", "state", &[7u8; 60_000], &neighbour_limits)
        .expect("the neighbour's quota is its own");
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_cannot_forge_lines_or_drive_the_terminal() {
    let mut p = WatPlugin::new(Ask::default());
    // CSI and OSC, a C1 CSI, a carriage return that hides what came
    // before, and a right-to-left override that reorders what follows.
    let nasty = "a\x1b[31mred\x1b]8;;http://evil\x07link\u{9b}2J\rhidden\u{202e}desrever\nFORGED";
    let (line, len) = p.data.string(nasty);
    let hostile = p
        .body(&format!(
            "(call $log (i32.const 4) (i32.const {line}) (i32.const {len}))"
        ))
        .build();
    let host = host_with(hostile, "").await;
    let mut logs = host.app.runtime.services().log_observers.subscribe();
    host.app.runtime.dispatch("hostile", &poke()).await.unwrap();
    let record = logs.try_recv().expect("one line");
    let m = &record.message;
    assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
    assert!(!m.contains('\u{202e}'), "{m:?}");
    for escaped in [
        "\\u{1b}[31m",
        "\\u{7}",
        "\\u{9b}",
        "\\r",
        "\\u{202e}",
        "\\nFORGED",
    ] {
        assert!(m.contains(escaped), "{escaped} in {m:?}");
    }
}

// ---- WASI interfaces the host must refuse or deny ----

/// The parts of `wasi:sockets@0.2.0` a hostile plugin uses: only what the
/// imports below need, with the interface's real names and error cases, so
/// they match the host's definitions (a component may import a subset).
const WASI_SOCKETS: &str = "package wasi:sockets@0.2.0;
interface network {
  resource network;
  enum error-code { unknown, access-denied, not-supported, invalid-argument, out-of-memory, timeout,
    concurrency-conflict, not-in-progress, would-block, invalid-state, new-socket-limit,
    address-not-bindable, address-in-use, remote-unreachable, connection-refused, connection-reset,
    connection-aborted, datagram-too-large, name-unresolvable, temporary-resolver-failure,
    permanent-resolver-failure }
  enum ip-address-family { ipv4, ipv6 }
}
interface tcp {
  resource tcp-socket;
}
interface tcp-create-socket {
  use network.{error-code, ip-address-family};
  use tcp.{tcp-socket};
  create-tcp-socket: func(address-family: ip-address-family) -> result<tcp-socket, error-code>;
}
interface udp {
  resource udp-socket;
}
interface udp-create-socket {
  use network.{error-code, ip-address-family};
  use udp.{udp-socket};
  create-udp-socket: func(address-family: ip-address-family) -> result<udp-socket, error-code>;
}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_sockets_load_but_every_call_is_denied() {
    // Each create call must answer err (1) access-denied (case 1, at 4).
    let denied = |call: &str, family: u8| {
        format!(
            "(call ${call} (i32.const {family}) (i32.const {RET}))
             (if (i32.ne (i32.load8_u (i32.const {RET})) (i32.const 1)) (then unreachable))
             (if (i32.ne (i32.load8_u (i32.const {payload})) (i32.const 1)) (then unreachable))\n",
            payload = RET + 4,
        )
    };
    let body = [
        denied("tcp", 0),
        denied("tcp", 1),
        denied("udp", 0),
        denied("udp", 1),
    ]
    .concat();
    let hostile = WatPlugin::new(Ask::default())
        .foreign(
            &[WASI_SOCKETS],
            &[
                "wasi:sockets/tcp-create-socket@0.2.0",
                "wasi:sockets/udp-create-socket@0.2.0",
            ],
        )
        .imports(
            r#"
  (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $tcp (param i32 i32)))
  (import "wasi:sockets/udp-create-socket@0.2.0" "create-udp-socket" (func $udp (param i32 i32)))
"#,
        )
        .body(&body)
        .build();
    let host = host_with(hostile, "").await;
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("the component loaded, and every TCP and UDP socket was access-denied");
    assert_neighbour_fine(&host).await;
}

const WASI_FILESYSTEM: &str = "package wasi:filesystem@0.2.0;
interface types {
  resource descriptor;
}
interface preopens {
  use types.{descriptor};
  get-directories: func() -> list<tuple<descriptor, string>>;
}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_filesystem_loads_with_no_directory_to_open() {
    let hostile = WatPlugin::new(Ask::default())
        .foreign(&[WASI_FILESYSTEM], &["wasi:filesystem/preopens@0.2.0"])
        .imports(
            r#"(import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $dirs (param i32)))"#,
        )
        .body(&format!(
            "(call $dirs (i32.const {RET}))
             ;; the list's length: no preopened directory at all
             (if (i32.ne (i32.load (i32.const {len})) (i32.const 0)) (then unreachable))",
            len = RET + 4,
        ))
        .build();
    let host = host_with(hostile, "").await;
    host.app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .expect("the component loaded and found no directory");
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_http_is_refused_at_load_with_a_clear_error() {
    let http = "package wasi:http@0.2.0;
interface outgoing-handler {
  handle: func(url: string) -> result<string, string>;
}
";
    let hostile = WatPlugin::new(Ask::default())
        .foreign(&[http], &["wasi:http/outgoing-handler@0.2.0"])
        .imports(
            r#"(import "wasi:http/outgoing-handler@0.2.0" "handle" (func $get (param i32 i32 i32)))"#,
        )
        .body(&format!(
            "(call $get (i32.const 0) (i32.const 0) (i32.const {RET}))"
        ))
        .build();
    let host = TestHost::new(&[("hostile", hostile, ""), ("neighbour", neighbour(), "")]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.starts_with("plugin `hostile`"), "{text}");
    assert!(text.contains("wasi:http/outgoing-handler@0.2.0"), "{text}");
    assert!(host.app.runtime.plugin("hostile").is_none());
    assert_neighbour_fine(&host).await;
}

// ---- a plugin swapped while a call is running ----

/// Logs "started", then waits (bounded by its deadline) until the host's kv
/// has `go` in its namespace, then sends `text`.
fn waits_then_sends(text: &str) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default()).imports(KV_IMPORTS);
    let (started, started_len) = p.data.string("started");
    let (go, go_len) = p.data.string("go");
    let msg = p.text_message("lobby", text);
    let body = format!(
        "(call $log (i32.const 2) (i32.const {started}) (i32.const {started_len}))
         (loop $wait
           (call $kv_get (i32.const {go}) (i32.const {go_len}) (i32.const {RET}))
           ;; ok(none): not yet
           (br_if $wait (i32.eqz (i32.load8_u (i32.const {some})))))
         {send}",
        some = RET + 8,
        send = send_and_expect(msg, 0),
    );
    p.body(&body).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_swapped_mid_call_finishes_on_the_old_version() {
    let host = TestHost::new(&[
        (
            "swapped",
            waits_then_sends("from v1"),
            "limits = { deadline_ms = 10000 }",
        ),
        ("neighbour", neighbour(), ""),
    ]);
    host.load_all().await;
    let mut logs = host.app.runtime.services().log_observers.subscribe();
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    let runtime = host.app.runtime.clone();
    let first = tokio::spawn(async move { runtime.dispatch("swapped", &poke()).await });
    // The call is inside the guest now.
    let started = tokio::time::timeout(std::time::Duration::from_secs(10), logs.recv())
        .await
        .expect("the first call started")
        .unwrap();
    assert_eq!(started.plugin, "swapped");
    let old_generation = host.app.runtime.plugin("swapped").unwrap().generation;

    // Swap in v2 while v1 runs.
    support::replace_file(
        &host.dir.path().join("swapped.wasm"),
        &waits_then_sends("from v2"),
    );
    let config = host.app.config.plugins["swapped"].clone();
    host.app
        .runtime
        .load("swapped", &config)
        .await
        .expect("v2 loads while v1 runs");
    assert!(host.app.runtime.plugin("swapped").unwrap().generation > old_generation);
    assert_neighbour_fine(&host).await;
    let _ = accepted.try_recv();

    // Let v1 finish: it sends what v1 sends.
    let kv = host.app.runtime.services().kv;
    let limits = host
        .app
        .runtime
        .plugin("swapped")
        .unwrap()
        .context
        .slices
        .kv
        .limits;
    kv.set("swapped", "go", b"1", &limits).unwrap();
    first.await.unwrap().expect("the call in flight finished");
    let a = accepted.try_recv().expect("v1's message");
    assert_eq!(a.plugin, "swapped");
    assert!(
        matches!(&a.message.content, botbox::wit::types::Content::Text(t) if t == "from v1"),
        "{:?}",
        a.message.content
    );
    // The next call runs v2.
    host.app.runtime.dispatch("swapped", &poke()).await.unwrap();
    let b = accepted.try_recv().expect("v2's message");
    assert!(
        matches!(&b.message.content, botbox::wit::types::Content::Text(t) if t == "from v2"),
        "{:?}",
        b.message.content
    );
}

// ---- the sandbox and the host's own memory ----

/// The WIT of the functions the hog instances offer the inner plugin.
fn hog_wit(hogs: usize) -> String {
    let funcs: String = (0..hogs)
        .map(|i| format!("  grow{i}: func(pages: u32) -> s32;\n"))
        .collect();
    format!("package test:hog@0.1.0;\ninterface hog {{\n{funcs}}}\n")
}

fn leb_u32(bytes: &[u8], pos: &mut usize) -> u32 {
    let mut value = 0u32;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The sections of a component made by `wit-component` up to and with its
/// import of `botbox:bot/types`, less the import of `test:hog`, as
/// (section id, payload).
fn types_import_of(component: &[u8]) -> Vec<(u8, Vec<u8>)> {
    const TYPE: u8 = 7;
    const IMPORT: u8 = 10;
    let mut pos = 8;
    let mut out = Vec::new();
    while pos < component.len() {
        let id = component[pos];
        pos += 1;
        let len = leb_u32(component, &mut pos) as usize;
        let payload = component[pos..pos + len].to_vec();
        pos += len;
        match id {
            0 => continue,
            TYPE => out.push((id, payload)),
            IMPORT => {
                assert_eq!(leb_u32(&payload, &mut 0), 1, "one import a section");
                let has = |name: &[u8]| payload.windows(name.len()).any(|w| w == name);
                if has(b"botbox:bot/types@0.1.0") {
                    out.push((id, payload));
                    return out;
                }
                // The hogs' import: the wrapper provides it, it does not
                // import it (its instance type stays, unused).
                assert!(has(b"test:hog/hog@0.1.0"), "an unexpected import");
            }
            other => panic!("section {other} before the first import"),
        }
    }
    panic!("no import section")
}

/// A plugin made of `1 + hogs` core instances, each with its own memory:
/// a WAT bot whose `handle` runs `body` and may call `$grow0`… (each grows
/// one hog's memory by its argument in pages and answers the old size, or
/// -1), nested in a component that instantiates the hog module `hogs`
/// times and gives the bot their `grow`s.
fn multi_memory(hogs: usize, body: &str) -> Vec<u8> {
    use wasm_encoder::{
        Alias, CanonicalFunctionSection, Component, ComponentAliasSection, ComponentExportKind,
        ComponentExportSection, ComponentInstanceSection, ComponentSectionId, ComponentTypeSection,
        ExportKind, InstanceSection, ModuleArg, PrimitiveValType, RawSection,
    };
    let wit = hog_wit(hogs);
    let imports: String = (0..hogs)
        .map(|i| {
            format!(
                "(import \"test:hog/hog@0.1.0\" \"grow{i}\" (func $grow{i} (param i32) (result i32)))\n"
            )
        })
        .collect();
    let inner = WatPlugin::new(Ask::default())
        .without_host_imports()
        .foreign(&[&wit], &["test:hog/hog@0.1.0"])
        .imports(&imports)
        .body(body)
        .build();
    let hog = wat::parse_str(
        "(module (memory 0)
           (func (export \"grow\") (param i32) (result i32) (memory.grow (local.get 0))))",
    )
    .unwrap();

    // The bot imports `botbox:bot/types` (the types its handler uses), so
    // the wrapper imports it too and passes it on: copy the bot's own
    // sections up to that import, which define its type and import it.
    let prefix = types_import_of(&inner);

    // The hogs live in a component of their own beside the bot: the bot may
    // call into a sibling, not back into the component that contains it.
    let mut hogs_component = Component::new();
    hogs_component.section(&RawSection {
        id: ComponentSectionId::CoreModule as u8,
        data: &hog,
    });
    let mut instances = InstanceSection::new();
    for _ in 0..hogs {
        instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    }
    hogs_component.section(&instances);
    let mut aliases = ComponentAliasSection::new();
    for i in 0..hogs as u32 {
        aliases.alias(Alias::CoreInstanceExport {
            instance: i,
            kind: ExportKind::Func,
            name: "grow",
        });
    }
    hogs_component.section(&aliases);
    let mut types = ComponentTypeSection::new();
    types
        .function()
        .params([("pages", PrimitiveValType::U32)])
        .result(Some(PrimitiveValType::S32.into()));
    hogs_component.section(&types);
    let mut canon = CanonicalFunctionSection::new();
    for i in 0..hogs as u32 {
        canon.lift(i, 0, []);
    }
    hogs_component.section(&canon);
    let mut grows = ComponentExportSection::new();
    for i in 0..hogs as u32 {
        grows.export(
            format!("grow{i}").as_str(),
            ComponentExportKind::Func,
            i,
            None,
        );
    }
    hogs_component.section(&grows);
    let hogs_component = hogs_component.finish();

    let mut c = Component::new();
    for (id, payload) in &prefix {
        c.section(&RawSection {
            id: *id,
            data: payload,
        });
    }
    // Component 0: the hogs; component 1: the bot.
    c.section(&RawSection {
        id: ComponentSectionId::Component as u8,
        data: &hogs_component,
    });
    c.section(&RawSection {
        id: ComponentSectionId::Component as u8,
        data: &inner,
    });
    // Instance 0 is the imported `types`; 1 the hogs; 2 the bot.
    let mut instances = ComponentInstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ComponentExportKind, u32)>::new());
    instances.instantiate(
        1,
        [
            ("botbox:bot/types@0.1.0", ComponentExportKind::Instance, 0),
            ("test:hog/hog@0.1.0", ComponentExportKind::Instance, 1),
        ],
    );
    c.section(&instances);
    let mut handler = ComponentAliasSection::new();
    handler.alias(Alias::InstanceExport {
        instance: 2,
        kind: ComponentExportKind::Instance,
        name: "botbox:bot/handler@0.1.0",
    });
    c.section(&handler);
    let mut exports = ComponentExportSection::new();
    exports.export(
        "botbox:bot/handler@0.1.0",
        ComponentExportKind::Instance,
        3,
        None,
    );
    c.section(&exports);
    c.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cap_is_on_the_sum_of_all_memories_of_an_instance() {
    // Three hogs grow their memories a page at a time, in turn, until one
    // is refused; then the sum of the four memories (the bot's own 2
    // pages too) must be exactly the cap of 8 MiB = 128 pages. If it is,
    // the guest aborts the way a Rust guest does when it cannot grow; if
    // not, it returns normally and the test sees the call succeed.
    let hostile = multi_memory(
        3,
        "(block $full (loop $l
           (br_if $full (i32.eq (call $grow0 (i32.const 1)) (i32.const -1)))
           (br_if $full (i32.eq (call $grow1 (i32.const 1)) (i32.const -1)))
           (br_if $full (i32.eq (call $grow2 (i32.const 1)) (i32.const -1)))
           (br $l)))
         (local.set $r (i32.add
           (i32.add (call $grow0 (i32.const 0)) (call $grow1 (i32.const 0)))
           (i32.add (call $grow2 (i32.const 0)) (memory.size))))
         (if (i32.eq (local.get $r) (i32.const 128)) (then unreachable))",
    );
    let host = host_with(hostile, FAST).await;
    let err = host
        .app
        .runtime
        .dispatch("hostile", &poke())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HandleError::OutOfMemory {
            plugin: "hostile".into(),
            wanted: (8 << 20) + 65_536,
            cap: 8 << 20,
        }
    );
    assert_neighbour_fine(&host).await;
}

/// Just enough of `wasi:io` and `wasi:cli` to call `get-stdout`.
const WASI_STDOUT: [&str; 2] = [
    "package wasi:io@0.2.0;
interface streams {
  resource output-stream;
}
",
    "package wasi:cli@0.2.0;
interface stdout {
  use wasi:io/streams@0.2.0.{output-stream};
  get-stdout: func() -> output-stream;
}
",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaking_host_handles_stops_at_the_table_cap() {
    use botbox::runtime::state::MAX_HOST_HANDLES;
    // Asks for a stdout stream 50,000 times and never drops one: each is an
    // entry in the host's resource table (and a tokio task behind it).
    let hostile = WatPlugin::new(Ask::default())
        .foreign(&WASI_STDOUT, &["wasi:cli/stdout@0.2.0"])
        .imports(r#"(import "wasi:cli/stdout@0.2.0" "get-stdout" (func $stdout (result i32)))"#)
        .body(
            "(loop $l
               (drop (call $stdout))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 50000))))",
        )
        .build();
    let host = host_with(hostile, "limits = { deadline_ms = 10000 }").await;
    let before = peak_rss();
    for _ in 0..2 {
        let result = host.app.runtime.dispatch("hostile", &poke()).await;
        eprintln!(
            "peak RSS grew by {} KiB",
            peak_rss().saturating_sub(before) >> 10
        );
        let err = result.unwrap_err();
        assert_eq!(
            err,
            HandleError::TooManyHandles {
                plugin: "hostile".into(),
                max: MAX_HOST_HANDLES,
            }
        );
        assert!(err.to_string().contains("drop the handles"), "{err}");
    }
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 16 << 20, "peak RSS grew by {} KiB", grown >> 10);
    assert_neighbour_fine(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_whose_concurrency_over_commits_the_pool_are_refused() {
    // 200 + 100 calls at once, each holding a component instance: the pool
    // has 256 (and 512 memories and tables).
    let small_pool = |_: &std::path::Path| "[runtime]\npool_instances = 256\n".to_string();
    let host = TestHost::with_top(
        &[
            ("greedy", neighbour(), "limits = { max_concurrency = 200 }"),
            (
                "neighbour",
                neighbour(),
                "limits = { max_concurrency = 100 }",
            ),
        ],
        small_pool,
    );
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains(
            "they may need 300 component instances at once, the pool has 256: 44 too many"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "`greedy` takes the most (200 concurrent calls × 1 = 200 component instances)"
        ),
        "{text}"
    );
    assert!(text.contains("limits.max_concurrency"), "{text}");
    assert!(
        host.app.runtime.plugin_names().is_empty(),
        "the set is refused whole"
    );

    // Four memories an instance, 150 at once: 600 memories, the pool has 512.
    let host = TestHost::with_top(
        &[
            (
                "hogs",
                multi_memory(3, ""),
                "limits = { max_concurrency = 150 }",
            ),
            ("neighbour", neighbour(), ""),
        ],
        small_pool,
    );
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains("memories at once, the pool has 512"),
        "{text}"
    );
    assert!(
        text.contains("`hogs` takes the most (150 concurrent calls × 4 = 600 memories)"),
        "{text}"
    );

    // The same plugins within the pool load.
    let host = TestHost::with_top(
        &[
            (
                "hogs",
                multi_memory(3, ""),
                "limits = { max_concurrency = 100 }",
            ),
            ("neighbour", neighbour(), ""),
        ],
        small_pool,
    );
    host.load_all().await;
    assert_neighbour_fine(&host).await;
}

/// The over-commit check must not cost an operator the many-bots host: a
/// hundred plugins at the default `max_concurrency` (8) fit the default
/// pool (`runtime.pool_instances`, 1024).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_plugins_at_the_default_concurrency_fit_the_default_pool() {
    let names: Vec<String> = (0..100).map(|i| format!("bot{i:03}")).collect();
    let plugins: Vec<(&str, Vec<u8>, &str)> = names
        .iter()
        .map(|n| (n.as_str(), neighbour(), ""))
        .collect();
    let host = TestHost::new(&plugins);
    let errors = host.app.load_plugins().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(host.app.runtime.plugin_names().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_per_component_bounds_is_refused_at_load() {
    // Nine memories in one component; one instance may take eight.
    let host = TestHost::new(&[
        ("big", multi_memory(8, ""), ""),
        ("neighbour", neighbour(), ""),
    ]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.starts_with("plugin `big`: "), "{text}");
    assert!(
        text.contains("more than one component instance may take"),
        "{text}"
    );
    assert!(text.contains("9 Wasm linear memories"), "{text}");
    assert!(text.contains("maximum of 8"), "{text}");
    assert!(host.app.runtime.plugin("big").is_none());
    assert_neighbour_fine(&host).await;
}

/// A plugin that logs `line` and does nothing else.
fn says(line: &str) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let (at, len) = p.data.string(line);
    p.body(&format!(
        "(call $log (i32.const 2) (i32.const {at}) (i32.const {len}))"
    ))
    .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_cache_entries_not_signed_by_this_host_are_recompiled() {
    use botbox::app::App;
    use botbox::config::Config;
    use botbox::runtime::CompileSource;

    let dir = tempfile::tempdir().unwrap();
    let b_bytes = says("I am b");
    std::fs::write(dir.path().join("a.wasm"), says("I am a")).unwrap();
    std::fs::write(dir.path().join("b.wasm"), &b_bytes).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.a]\npath = \"a.wasm\"\nchannels = [\"lobby\"]\n\
         [plugins.b]\npath = \"b.wasm\"\nchannels = [\"lobby\"]\n",
    )
    .unwrap();
    let app = || App::build(Config::load(&dir.path().join("botbox.toml")).unwrap()).unwrap();
    let cache = dir.path().join(".botbox/cache");
    let entries = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let source = |app: &App, name: &str| app.runtime.plugin(name).unwrap().compile_source;
    // Loads both, checks where each came from, and that `a` runs a's code.
    let load = |expect_a: CompileSource, expect_b: CompileSource| {
        let app = app();
        async move {
            assert!(app.load_plugins().await.is_empty());
            assert_eq!(source(&app, "a"), expect_a, "a");
            assert_eq!(source(&app, "b"), expect_b, "b");
            let mut logs = app.runtime.services().log_observers.subscribe();
            app.runtime.dispatch("a", &poke()).await.unwrap();
            assert_eq!(logs.try_recv().unwrap().message, "I am a");
            app
        }
    };

    // Which entry is whose: compile `a` alone first.
    let first = app();
    first
        .runtime
        .load("a", &first.config.plugins["a"])
        .await
        .unwrap();
    let a_entry = entries().into_iter().next().expect("a's entry");
    first
        .runtime
        .load("b", &first.config.plugins["b"])
        .await
        .unwrap();
    let b_entry = entries()
        .into_iter()
        .find(|e| *e != a_entry)
        .expect("b's entry");
    drop(first);
    // The key lives beside the cache, not in it, readable by this user only.
    let key = std::fs::metadata(dir.path().join(".botbox/cache.key")).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    // Entries this host wrote are used.
    drop(load(CompileSource::Cache, CompileSource::Cache).await);

    // One byte of a's compiled code flipped: recompiled, not loaded.
    let mut bytes = std::fs::read(&a_entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&a_entry, &bytes).unwrap();
    drop(load(CompileSource::Compiled, CompileSource::Cache).await);
    // ... and the rewritten entry is a hit again.
    drop(load(CompileSource::Cache, CompileSource::Cache).await);

    // b's entry, signed by this host but for b, put in a's place.
    std::fs::copy(&b_entry, &a_entry).unwrap();
    drop(load(CompileSource::Compiled, CompileSource::Cache).await);

    // A valid compiled component made by wasmtime with this very engine's
    // settings, as anyone able to write the folder could make one.
    let host = load(CompileSource::Cache, CompileSource::Cache).await;
    let foreign = host
        .runtime
        .engine()
        .precompile_component(&b_bytes)
        .unwrap();
    drop(host);
    std::fs::write(&a_entry, &foreign).unwrap();
    drop(load(CompileSource::Compiled, CompileSource::Cache).await);
}

/// Two plugins spin on every CPU turn there is, eight calls each, until a
/// 3 s deadline: the host's own work (an admin `/metrics` request over real
/// HTTP) is answered while they spin, no guest code ran on the host's
/// thread, and a third plugin's call gets a turn and finishes before any
/// spinning call does.
#[tokio::test(flavor = "current_thread")]
async fn host_work_and_a_neighbour_run_while_guests_spin_on_every_turn() {
    use std::sync::Arc;
    const TOKEN: &str = "admin-token-0123456789abcdef";
    let spin = || {
        WatPlugin::new(Ask::default())
            .body("(loop $l (br $l))")
            .build()
    };
    let slow = "limits = { deadline_ms = 3000, max_concurrency = 8 }";
    let host = TestHost::with_top(
        &[
            ("spin-a", spin(), slow),
            ("spin-b", spin(), slow),
            ("neighbour", neighbour(), ""),
        ],
        |dir| {
            let token = dir.join("admin-token");
            std::fs::write(&token, TOKEN).unwrap();
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = {} }}\n",
                toml::Value::String(token.display().to_string())
            )
        },
    );
    host.load_all().await;
    let app = &host.app;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = Arc::new(botbox::triggers::admin::AdminServer::new(
        app.admin.clone().expect("[admin] is set"),
        app.config.plugins.keys().cloned().collect(),
        app.runtime.clone(),
        app.delivery.clone(),
        app.shared.metrics.clone(),
    ));
    let served = tokio::spawn(admin.serve(listener, stop.clone()));

    let turns = app.runtime.turns().clone();
    turns.record();
    let mut spinning = Vec::new();
    for plugin in ["spin-a", "spin-b"] {
        for _ in 0..8 {
            let runtime = app.runtime.clone();
            spinning.push(tokio::spawn(async move {
                runtime.dispatch(plugin, &poke()).await
            }));
        }
    }
    // Until both plugins have had many turns: every turn is taken.
    let waiting = std::time::Instant::now();
    while turns.granted().len() < 50 {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(2),
            "the spinning calls do not take turns: {:?}",
            turns.granted()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let metrics = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    metrics.text().await.unwrap();
    assert_neighbour_fine(&host).await;
    assert!(
        spinning.iter().all(|t| !t.is_finished()),
        "answered while every spinning call still runs"
    );
    assert_eq!(
        botbox::runtime::guest_ticks_on_this_thread(),
        0,
        "guest code ran on the host's thread"
    );
    let granted = turns.granted();
    for plugin in ["spin-a", "spin-b", "neighbour"] {
        assert!(granted.iter().any(|p| p == plugin), "{plugin}: {granted:?}");
    }
    for t in spinning {
        assert!(matches!(t.await.unwrap(), Err(HandleError::Timeout { .. })));
    }
    stop.cancel();
    served.await.unwrap();
}

/// Each event's instance starts from the component's own memory, even
/// though pool slots are reset in place (kept resident) rather than handed
/// back to the kernel: what one event wrote, in its initial pages or in
/// pages it grew, is gone for the next. The plugin traps if it finds a
/// previous event's marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_sees_what_the_previous_one_wrote_in_memory() {
    let marker = WatPlugin::new(Ask::default())
        .body(
            "(drop (memory.grow (i32.const 1)))
             (if (i32.load (i32.const 130000)) (then unreachable))
             (if (i32.load (i32.const 140000)) (then unreachable))
             (i32.store (i32.const 130000) (i32.const 7))
             (i32.store (i32.const 140000) (i32.const 7))",
        )
        .build();
    let host = host_with(marker, FAST).await;
    for _ in 0..5 {
        host.app
            .runtime
            .dispatch("hostile", &poke())
            .await
            .expect("a fresh instance finds no marks");
    }
}

/// A call waiting for its broadcast's commit runs no guest code, so it
/// holds no CPU turn meanwhile: one plugin's concurrent broadcasts all
/// reach the outbox and share a commit, instead of one turn's worth at a
/// time (one plugin holds at most all turns but one). The outbox's SQLite
/// file is write-locked from outside, so every write waits at the real
/// store; the test sees every call inside its write while the scheduler
/// has every turn free and nobody waiting, then lets the writes through
/// and every broadcast is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_waiting_for_its_commit_holds_no_cpu_turn() {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "hi");
    let sender = p.body(&send_and_expect(msg, 0)).build();
    let host = TestHost::new(&[(
        "sender",
        sender,
        "limits = { deadline_ms = 30000, max_concurrency = 16 }",
    )]);
    host.load_all().await;
    let app = &host.app;
    let turns = app.runtime.turns().clone();
    let calls = turns.capacity() + 2;

    let outbox = host.dir.path().join(".botbox").join("outbox.sqlite");
    let lock = rusqlite::Connection::open(&outbox).expect("open the outbox from outside");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("write-lock the outbox");
    turns.record();
    let mut sending = Vec::new();
    for _ in 0..calls {
        let runtime = app.runtime.clone();
        sending.push(tokio::spawn(async move {
            runtime.dispatch("sender", &poke()).await
        }));
    }
    // Every call has had its first turn, and none holds or waits for one:
    // all are inside the outbox write. (SQLite's busy timeout, 5 s, fails
    // the writes if this is never reached.)
    let waiting = std::time::Instant::now();
    while !(turns.granted().len() >= calls && turns.idle()) {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(4),
            "the calls waiting for the outbox keep their turns: {} granted, idle {}",
            turns.granted().len(),
            turns.idle()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(sending.iter().all(|t| !t.is_finished()));
    lock.execute_batch("COMMIT").expect("unlock the outbox");
    for call in sending {
        call.await
            .unwrap()
            .expect("the broadcast was accepted after the wait");
    }
    let listed = app
        .delivery
        .outbox()
        .list(&botbox::delivery::store::ListFilter {
            limit: 100,
            ..Default::default()
        })
        .expect("list the outbox");
    assert_eq!(listed.len(), calls);
}

// ---- outbound HTTP, through a real 0.2.0 guest ----

/// The example bot `status` (a real botbox:bot@0.2.0 guest, Rust SDK
/// `http` feature) is asked to check a hostile server the operator
/// granted: a response trickled a byte at a time (slowloris), a 1 GB body,
/// and a redirect to a server it was not granted. Each call ends (the
/// trickle and the gigabyte are cut by the host, the redirect is not
/// followed), the ungranted server is never connected to, and a neighbour
/// answers after each attack. `tests/outbound_http.rs` drives the same
/// cases and more (a private address behind a granted name, a held
/// connection, a flood) through the host's hook directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_plugin_sent_to_hostile_servers_is_cut_and_its_neighbour_answers() {
    use botbox::wit::types::{ChatMessage, Content};
    use std::sync::atomic::Ordering;
    use support::http_server::{Reply, serve_on, status_port};

    let status = std::fs::read(support::example_plugin("status")).expect("status.wasm");
    let elsewhere = serve_on(status_port().await, Reply::Ok("elsewhere"));
    let redirect = Reply::Redirect(format!("http://127.0.0.1:{}/", elsewhere.port));
    for (attack, reply) in [
        ("slowloris", Reply::Trickle),
        ("1 GB body", Reply::Gigabyte),
        ("redirect to an ungranted host", redirect),
    ] {
        let server = serve_on(status_port().await, reply);
        let port = server.port;
        let host = TestHost::new(&[
            (
                "hostile",
                status.clone(),
                &format!(
                    "events = [\"chat-message\"]\nhttp = [\"127.0.0.1:{port}\"]\n\
                     http_plain_loopback = true\n\
                     limits = {{ deadline_ms = 2000, http_timeout_ms = 300 }}"
                ),
            ),
            ("neighbour", neighbour(), ""),
        ]);
        host.load_all().await;
        let mut accepted = host.app.delivery.observers().accepted.subscribe();
        let url = format!("http://127.0.0.1:{port}/");
        let check = Event::ChatMessage(ChatMessage {
            channel: "lobby".into(),
            conversation: "ops".into(),
            sender_id: "attacker".into(),
            sender_name: None,
            text: format!("!status {url}"),
            message_id: None,
            sent_at_ms: None,
        });
        // The call ends: with the bot's report, or at the event's deadline.
        let ended = host.app.runtime.dispatch("hostile", &check).await;
        assert!(
            matches!(ended, Ok(()) | Err(HandleError::Timeout { .. })),
            "{attack}: {ended:?}"
        );
        assert!(
            server.connections.load(Ordering::SeqCst) > 0,
            "{attack}: status never reached the server"
        );
        if let Ok(report) = accepted.try_recv() {
            let Content::Text(text) = &report.message.content else {
                panic!("{attack}: {:?}", report.message.content);
            };
            assert!(text.starts_with(&url), "{attack}: {text}");
            assert!(!text.contains("200 OK"), "{attack}: {text}");
            if attack.starts_with("redirect") {
                assert!(text.contains("302"), "{attack}: {text}");
            }
        }
        assert_eq!(
            elsewhere.connections.load(Ordering::SeqCst),
            0,
            "{attack}: the ungranted server was connected to"
        );
        assert_neighbour_fine(&host).await;
    }
}
