//! Hostile plugins, built in-process from WAT: each attack is contained, and
//! a well-behaved neighbour's call made right after it still succeeds.

mod support;

use botbox::runtime::HandleError;
use botbox::wit::types::{CustomEvent, Event};
use support::{Ask, TestHost, WatPlugin, send_and_expect};

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
    let mut p = WatPlugin::new(Ask::default());
    let (line, len) = p.data.string("flood\x1b[2J\x1b]0;owned\x07\nFORGED LINE");
    let hostile = p
        .body(&format!(
            "(loop $l
               (call $log (i32.const 2) (i32.const {line}) (i32.const {len}))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))"
        ))
        .build();
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
    let foreign = WatPlugin::new(Ask::default()).version("0.2.0").build();
    let host = TestHost::new(&[("foreign", foreign, "")]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.contains("built against WIT botbox:bot@0.2.0"),
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
