//! Durable accepts end to end, as an operator's traffic arrives (issue 19,
//! target 2): the release `botbox run` with 16 copies of the example
//! greeter on a console channel, meeting events POSTed to its admin API
//! over 64 connections for a fixed time. With a broadcast each
//! (`user-joined`: the greeter posts a welcome, durably accepted into the
//! outbox before the event is answered), and without (`user-left`: the
//! greeter says nothing) as the reference, in the same run.
//!
//! The load generator is this process (reqwest on one tokio thread); its
//! CPU time and the server's are read from /proc and shown, since on two
//! cores the generator takes a share of what the server could use.
//! Afterwards the outbox file is counted: every event answered with a
//! receipt must be a row (asserted here, the benchmark's own check).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::reload::example;
use crate::report::Report;

const SECTION: &str = "end to end";
const PLUGINS: usize = 16;
const CONNECTIONS: usize = 64;
const TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn prepare(dir: &Path, greeter: &[u8], port: u16) {
    std::fs::write(dir.join("admin-token"), TOKEN).expect("token");
    let mut toml = format!(
        "[runtime]\nreload = false\n\
         [admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ file = \"admin-token\" }}\n\
         [providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n"
    );
    for i in 0..PLUGINS {
        std::fs::write(dir.join(format!("g{i:02}.wasm")), greeter).expect("plugin");
        toml.push_str(&format!(
            "[plugins.g{i:02}]\npath = \"g{i:02}.wasm\"\nchannels = [\"lobby\"]\n\
             events = [\"meeting\"]\n\
             limits = {{ broadcasts_per_minute = 100000, max_concurrency = 16 }}\n"
        ));
    }
    std::fs::write(dir.join("botbox.toml"), toml).expect("config");
}

/// What one load gave.
struct Figures {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    answered: usize,
    receipts: usize,
    refused: usize,
    failed: usize,
    server_cpu_s: f64,
    generator_cpu_s: f64,
    rows: Option<usize>,
}

/// Starts `botbox run` in `dir`, POSTs `kind` meeting events for `window`
/// over [`CONNECTIONS`] connections, stops it and counts its outbox.
fn load(dir: &Path, port: u16, kind: &str, window: Duration) -> Figures {
    // A fresh outbox per load.
    let _ = std::fs::remove_dir_all(dir.join(".botbox"));
    let seconds = window.as_secs() + 30;
    let mut server = Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after"])
        .arg(seconds.to_string())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("botbox run starts");
    let pid = server.id().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONNECTIONS)
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        // Up once /healthz answers and every plugin is loaded.
        let ready = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = client
                .get(format!("{base}/plugins"))
                .bearer_auth(TOKEN)
                .send()
                .await;
            if let Ok(r) = listed
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["plugins"].as_array().is_some_and(|a| a.len() == PLUGINS)
            {
                break;
            }
            assert!(Instant::now() < ready, "botbox run did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let receipts = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let generator_before = cpu_seconds("self");
        let server_before = cpu_seconds(&pid);
        let started = Instant::now();
        let end = started + window;
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let (client, base) = (client.clone(), base.clone());
                let (receipts, refused, failed) =
                    (receipts.clone(), refused.clone(), failed.clone());
                let kind = kind.to_string();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut i = 0usize;
                    while Instant::now() < end {
                        let plugin = format!("g{:02}", (c + i) % PLUGINS);
                        let body = format!(
                            r#"{{"meeting": {{"channel": "lobby", "kind": "{kind}", "meeting-id": "m-{c}", "user-name": "user {i}"}}}}"#
                        );
                        i += 1;
                        let t = Instant::now();
                        let answer = client
                            .post(format!("{base}/plugins/{plugin}/events"))
                            .bearer_auth(TOKEN)
                            .body(body)
                            .send()
                            .await;
                        let Ok(answer) = answer else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let ok = answer.status().is_success();
                        let Ok(v) = answer.json::<serde_json::Value>().await else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        let count = |field: &str| v[field].as_array().map_or(0, Vec::len);
                        receipts.fetch_add(count("receipts"), Ordering::Relaxed);
                        refused.fetch_add(count("refused"), Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for s in senders {
            latencies.extend(s.await.expect("sender"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let server_cpu_s = cpu_seconds(&pid) - server_before;
        let generator_cpu_s = cpu_seconds("self") - generator_before;
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        Figures {
            events_per_s: latencies.len() as f64 / elapsed,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            answered: latencies.len(),
            receipts: receipts.load(Ordering::Relaxed),
            refused: refused.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            server_cpu_s,
            generator_cpu_s,
            rows: None,
        }
    });
    // Stopped the way an operator stops it; then its outbox is read.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = server.wait();
    let outbox = dir.join(".botbox/outbox.sqlite");
    let rows = rusqlite::Connection::open(&outbox)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0)))
        .ok()
        .map(|n| n as usize);
    Figures { rows, ..figures }
}

pub fn run(report: &mut Report, quick: bool) {
    let Ok(greeter) = std::fs::read(example("greeter")) else {
        report.skip(format!(
            "end to end: {} is missing (cargo xtask bench builds it)",
            example("greeter").display()
        ));
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    prepare(dir.path(), &greeter, port);
    let window = Duration::from_secs(if quick { 2 } else { 10 });
    let quiet = load(dir.path(), port, "user-left", window);
    let loud = load(dir.path(), port, "user-joined", window);
    let rows = loud.rows.unwrap_or(0);
    // Every event answered with a receipt is a row of the outbox.
    assert_eq!(
        rows, loud.receipts,
        "outbox rows against receipts answered: {rows} rows, {} receipts",
        loud.receipts
    );
    assert_eq!(quiet.receipts, 0, "user-left makes no broadcast");
    let cpu = |f: &Figures| {
        format!(
            "server {:.1} CPU-s, load generator {:.1} CPU-s in {} s",
            f.server_cpu_s,
            f.generator_cpu_s,
            window.as_secs()
        )
    };
    report.add(
        SECTION,
        format!(
            "admin API, {PLUGINS} greeters on a console channel, {CONNECTIONS} connections: one durable broadcast per event"
        ),
        loud.events_per_s,
        "events/s",
        format!(
            "p50 {:.1} ms, p99 {:.1} ms; {} answered, {} receipts = {rows} outbox rows, {} refused, {} failed; {}; no broadcast, same run: {:.0} events/s, p50 {:.1} ms, p99 {:.1} ms ({:.2}x), {}",
            loud.p50_ms,
            loud.p99_ms,
            loud.answered,
            loud.receipts,
            loud.refused,
            loud.failed,
            cpu(&loud),
            quiet.events_per_s,
            quiet.p50_ms,
            quiet.p99_ms,
            loud.events_per_s / quiet.events_per_s.max(1.0),
            cpu(&quiet),
        ),
    );
    report.target(
        "≥ 20,000/s, every answered event an outbox row",
        loud.events_per_s >= 20_000.0 && loud.refused == 0 && loud.failed == 0,
    );
}
