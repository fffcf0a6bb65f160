//! A neighbour plugin's handling latency, quiet and while another plugin
//! attacks the host: p50 and p99 side by side, with the p99 ratio. Any
//! ratio over 2x is marked, with the reason.
//!
//! `cargo bench -p botbox --bench attacks`. The attacks are the hostile
//! plugins of tests/hostile_plugins.rs, each run in a loop by two tasks
//! (eight for `infinite loop x8`: a plugin handling events side by side)
//! while the neighbour handles `CALLS` events one after another.
//!
//! The outbound-HTTP rows (slowloris, 1 GB response, request flood) run the
//! example bot `status` (botbox:bot@0.2.0; build it first with `cargo xtask
//! plugins`) against a hostile server on 127.0.0.1, under the default
//! `limits.http_*`. `BOTBOX_BENCH_QUICK=1` measures 40 calls instead of
//! 400, to check the harness.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use botbox::wit::types::{ChatMessage, CustomEvent, Event};
use support::http_server::{Reply, serve_on, status_port};
use support::{Ask, TestHost, WatPlugin};

/// How many neighbour calls one figure is made of.
fn calls() -> usize {
    if std::env::var_os("BOTBOX_BENCH_QUICK").is_some() {
        40
    } else {
        400
    }
}

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

const KV_SET: &str =
    r#"(import "botbox:bot/kv@0.1.0" "set" (func $kv_set (param i32 i32 i32 i32 i32)))"#;
const RET: u32 = 61_000;
const HUGE: u32 = 60 << 20;

struct Attack {
    name: &'static str,
    component: Vec<u8>,
    limits: &'static str,
    /// How many tasks run the attack side by side.
    tasks: usize,
    /// Why the neighbour may slow down, shown when its p99 is over 2x.
    reason: &'static str,
}

fn attacks() -> Vec<Attack> {
    let infinite = WatPlugin::new(Ask::default())
        .body("(loop $l (br $l))")
        .build();
    let memory = WatPlugin::new(Ask::default())
        .body(
            "(block $done (loop $l
               (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
               (br $l)))
             unreachable",
        )
        .build();
    let flood = support::log_flood("flood\x1b[2J\nFORGED");
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "spam");
    let spam = p
        .body(&format!(
            "(loop $l
               (call $send (i32.const {msg}) (i32.const {ret}))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))",
            ret = support::SEND_RET,
        ))
        .build();
    let mut p = WatPlugin::new(Ask::default()).imports(KV_SET);
    let (key, _) = p.data.string("k?");
    let kv = p
        .body(&format!(
            "(loop $l
               (i32.store8 (i32.const {kb}) (i32.add (i32.const 0x30) (local.get $i)))
               (call $kv_set (i32.const {key}) (i32.const 2) (i32.const 65536) (i32.const 4096) (i32.const {RET}))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 70))))",
            kb = key + 1,
        ))
        .build();
    let mut p = WatPlugin::new(Ask::default()).imports(KV_SET);
    let msg = p.text_message_at("lobby", 65_536, HUGE);
    let (key, key_len) = p.data.string("big");
    let huge = p
        .body(&format!(
            "(drop (memory.grow (i32.const {pages})))
             (memory.fill (i32.const 65536) (i32.const 0x78) (i32.const {HUGE}))
             (call $log (i32.const 2) (i32.const 65536) (i32.const {HUGE}))
             (call $send (i32.const {msg}) (i32.const {ret}))
             (call $kv_set (i32.const {key}) (i32.const {key_len}) (i32.const 65536) (i32.const {HUGE}) (i32.const {RET}))",
            pages = HUGE / 65_536,
            ret = support::SEND_RET,
        ))
        .build();
    vec![
        Attack {
            name: "infinite loop x8",
            component: infinite.clone(),
            limits: "limits = { deadline_ms = 200 }",
            tasks: 8,
            reason: "CPU: eight calls of one plugin spin until their deadline; they share its one turn and one core, and the neighbour's guest thread shares the other core with the host and every other process",
        },
        Attack {
            name: "infinite loop",
            component: infinite,
            limits: "limits = { deadline_ms = 200 }",
            tasks: 2,
            reason: "CPU: the attacking calls spin until their 200 ms deadline on one core (one plugin holds at most all turns but one); the neighbour's guest thread shares the other core with the host and every other process",
        },
        Attack {
            name: "memory growth",
            component: memory,
            limits: "",
            tasks: 2,
            reason: "memory: each call maps and zeroes up to 64 MiB, which the kernel does on the neighbour's cores",
        },
        Attack {
            name: "log flood",
            component: flood,
            limits: "limits = { log_lines_per_second = 10 }",
            tasks: 2,
            reason: "CPU: 20,000 log calls per event, each a host call that lifts its string across the boundary before the rate limit refuses it",
        },
        Attack {
            name: "broadcast spam",
            component: spam,
            limits: "limits = { broadcasts_per_minute = 5 }",
            tasks: 2,
            reason: "CPU and the outbox lock: accepted sends write to SQLite",
        },
        Attack {
            name: "kv fill",
            component: kv,
            limits: "limits = { kv_max_total_kb = 64 }",
            tasks: 2,
            reason: "disk: each set is a SQLite transaction with fsync",
        },
        Attack {
            name: "huge strings",
            component: huge,
            limits: "",
            tasks: 2,
            reason: "memory bandwidth: 60 MiB written by the guest and copied by bindgen's lift, per import; neither can yield, so they hold one turn and one core until done (the neighbour has the other turn)",
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Each call is its own task on the runtime's workers, as a webhook or a
/// schedule tick is in `botbox run`, so it waits for a free worker like
/// they do.
async fn neighbour_latency(host: &Arc<TestHost>) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(calls());
    for _ in 0..calls() {
        let h = host.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            h.app
                .runtime
                .dispatch("neighbour", &poke())
                .await
                .expect("the neighbour's call");
        })
        .await
        .expect("the neighbour's task");
        v.push(started.elapsed());
    }
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// Runs `attack` from `tasks` tasks until `stop`; returns how many attacking
/// calls ran.
fn start_attack<F, Fut>(
    attack: F,
    tasks: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (0..tasks)
        .map(|_| {
            let stop = stop.clone();
            let attack = attack.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    attack().await;
                    n += 1;
                }
                n
            })
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn row(
    name: &str,
    quiet: (Duration, Duration),
    loud: (Duration, Duration),
    calls: u64,
    reason: &str,
) {
    let ratio = loud.1.as_secs_f64() / quiet.1.as_secs_f64().max(1e-9);
    let mark = if ratio > 2.0 { "  OVER 2x" } else { "" };
    println!(
        "{name:<16} {:>9} {:>9} {:>10} {:>10} {:>8.2}x {calls:>8}{mark}",
        ms(quiet.0),
        ms(quiet.1),
        ms(loud.0),
        ms(loud.1),
        ratio,
    );
    if ratio > 2.0 {
        println!("{:<16} reason: {reason}", "");
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        println!(
            "neighbour handling latency, {} calls each, in ms; {} cores",
            calls(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<16} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8}",
            "attack", "p50 quiet", "p99 quiet", "p50 attack", "p99 attack", "p99 ratio", "attacks"
        );
        for attack in attacks() {
            let host = TestHost::new(&[
                ("hostile", attack.component, attack.limits),
                ("neighbour", support::logs("neighbour ok"), ""),
            ]);
            host.load_all().await;
            let host = Arc::new(host);
            // Warm up, then the quiet figure on this very host.
            let _ = neighbour_latency(&host).await;
            let quiet = neighbour_latency(&host).await;
            let stop = Arc::new(AtomicBool::new(false));
            let h = host.clone();
            let tasks = start_attack(
                move || {
                    let h = h.clone();
                    async move {
                        let _ = h.app.runtime.dispatch("hostile", &poke()).await;
                    }
                },
                attack.tasks,
                stop.clone(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let loud = neighbour_latency(&host).await;
            stop.store(true, Ordering::Relaxed);
            let mut calls = 0;
            for t in tasks {
                calls += t.await.unwrap_or(0);
            }
            row(attack.name, quiet, loud, calls, attack.reason);
        }

        // A reload storm: the hostile plugin's file replaced and reloaded
        // in a loop, alternating two versions (compile cache hits).
        let host = TestHost::new(&[
            ("hostile", support::logs("v0"), ""),
            ("neighbour", support::logs("neighbour ok"), ""),
        ]);
        host.load_all().await;
        let host = Arc::new(host);
        let _ = neighbour_latency(&host).await;
        let quiet = neighbour_latency(&host).await;
        let versions = Arc::new([support::logs("v1"), support::logs("v2")]);
        let flip = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let h = host.clone();
        let tasks = start_attack(
            move || {
                let h = h.clone();
                let versions = versions.clone();
                let flip = flip.clone();
                async move {
                    let n = flip.fetch_add(1, Ordering::Relaxed) as usize;
                    // Its own temporary name: the two tasks write at once.
                    let path = h.dir.path().join("hostile.wasm");
                    let tmp = h.dir.path().join(format!("hostile.{n}.tmp"));
                    if std::fs::write(&tmp, &versions[n % 2]).is_err()
                        || std::fs::rename(&tmp, &path).is_err()
                    {
                        return;
                    }
                    let config = h.app.config.plugins["hostile"].clone();
                    let _ = h.app.runtime.load("hostile", &config).await;
                }
            },
            2,
            stop.clone(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let loud = neighbour_latency(&host).await;
        stop.store(true, Ordering::Relaxed);
        let mut calls = 0;
        for t in tasks {
            calls += t.await.unwrap_or(0);
        }
        row(
            "reload storm",
            quiet,
            loud,
            calls,
            "CPU: each reload reads, hashes and deserializes the component and runs describe()",
        );

        // Outbound HTTP: `status` asked to check a hostile loopback server
        // on one of the ports it asks for, granted with http_plain_loopback.
        let status = std::fs::read(support::example_plugin("status")).expect("status.wasm");
        let http_attacks: [(&str, Reply, usize, &str); 3] = [
            (
                "http slowloris",
                Reply::Trickle,
                2,
                "a trickled body holds each attacking call, and its turn, until http_timeout_ms",
            ),
            (
                "http 1 GB body",
                Reply::Gigabyte,
                2,
                "the guest reads up to http_response_max_kb before the host cuts the body; the server and the host's copy share the cores",
            ),
            (
                "http flood",
                Reply::Ok("ok"),
                8,
                "eight tasks request back to back: every call is a connection until the requests_per_minute budget or http_max_in_flight refuses it",
            ),
        ];
        for (name, reply, tasks, reason) in http_attacks {
            let server = serve_on(status_port().await, reply);
            let port = server.port;
            let host = TestHost::new(&[
                (
                    "hostile",
                    status.clone(),
                    &format!(
                        "events = [\"chat-message\"]\nhttp = [\"127.0.0.1:{port}\"]\nhttp_plain_loopback = true"
                    ),
                ),
                ("neighbour", support::logs("neighbour ok"), ""),
            ]);
            host.load_all().await;
            let host = Arc::new(host);
            let _ = neighbour_latency(&host).await;
            let quiet = neighbour_latency(&host).await;
            let check = Event::ChatMessage(ChatMessage {
                channel: "lobby".into(),
                conversation: "ops".into(),
                sender_id: "attacker".into(),
                sender_name: None,
                text: format!("!status http://127.0.0.1:{port}/"),
                message_id: None,
                sent_at_ms: None,
            });
            let stop = Arc::new(AtomicBool::new(false));
            let h = host.clone();
            let tasks = start_attack(
                move || {
                    let h = h.clone();
                    let check = check.clone();
                    async move {
                        let _ = h.app.runtime.dispatch("hostile", &check).await;
                    }
                },
                tasks,
                stop.clone(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let loud = neighbour_latency(&host).await;
            stop.store(true, Ordering::Relaxed);
            let mut calls = 0;
            for t in tasks {
                calls += t.await.unwrap_or(0);
            }
            row(name, quiet, loud, calls, reason);
            // The attack must have reached the server, or the row measures
            // nothing; fewer connections than calls are the host's refusals.
            let connections = server.connections.load(Ordering::SeqCst);
            assert!(connections > 0, "{name}: status never reached the server");
            println!("{:<16} {connections} connections reached the server", "");
            drop(server);
        }
    });
}
