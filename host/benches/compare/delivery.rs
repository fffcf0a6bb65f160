//! Delivery figures: outbox write throughput, and how much of each
//! provider endpoint's documented quota the throttle uses at 10×
//! oversubscription, with the violations it commits (must be 0).
//!
//! Throttle figures are computed in simulated time against the documented
//! windows (no network), so they are exact and repeatable; the simulator
//! tests in tests/delivery.rs check the same over real HTTP.
//!
//! Then the shared backend against SQLite: accept throughput, delivery
//! throughput over real HTTP to the Tencent simulator (its quota raised so
//! the storage, not the provider, is what is measured), and the latency a
//! message gains from accept to delivered, with one host and with three
//! (in-process hosts, each with its own connections, sharing one durable
//! PostgreSQL server started from the Debian package's binaries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::throttle::{ARRIVAL_JITTER, Limit, Throttle, ThrottleSpec};
use botbox::wit::types::{Content, Message};
use botbox_sim::{Sim, SimConfig, SimProvider};
use tokio_util::sync::CancellationToken;

use crate::report::Report;

fn outbox_writes() -> (usize, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml =
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n";
    let config = Config::parse(toml, &dir.path().join("botbox.toml"), dir.path()).expect("config");
    let app = Arc::new(App::build(config).expect("app"));
    let channel = app.delivery.channel("lobby").expect("channel");
    // As many as one endpoint holds waiting; no worker drains them.
    let n = botbox::delivery::MAX_BACKLOG;
    let started = Instant::now();
    for i in 0..n {
        let message = Message {
            channel: "lobby".into(),
            content: Content::Text(format!("message {i}")),
            sender: None,
            extra: None,
            idempotency_key: None,
            reply_to: None,
            options: None,
        };
        app.delivery
            .accept("bench", &channel, message)
            .expect("accepted");
    }
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// Runs the throttle at 10× the documented rate for `horizon_ms` of
/// simulated time and measures it against the documented windows.
fn utilisation(spec: &ThrottleSpec, horizon_ms: u64) -> (f64, usize, String) {
    let margin = ARRIVAL_JITTER.as_millis() as u64;
    let mut throttle = Throttle::new(spec.clone(), margin);
    let mut sends = Vec::new();
    let mut now = 0;
    // Offered load: more than the throttle can ever let through.
    while now < horizon_ms {
        let at = throttle.next_allowed(now);
        if at >= horizon_ms {
            break;
        }
        throttle.record(at);
        sends.push(at);
        now = at;
    }
    let mut violations = 0;
    let mut best_share = 0.0f64;
    let mut binding = String::new();
    for limit in &spec.limits {
        match limit {
            Limit::Window { count, period_ms } => {
                for (i, start) in sends.iter().enumerate() {
                    let within = sends[i..]
                        .iter()
                        .take_while(|t| **t < start + period_ms)
                        .count();
                    if within > *count as usize {
                        violations += 1;
                    }
                }
                let allowed = (horizon_ms / period_ms) as f64 * *count as f64;
                let share = sends.len() as f64 / allowed;
                if share > best_share {
                    best_share = share;
                    binding = format!("{count}/{}s", period_ms / 1000);
                }
            }
            Limit::LeakyBucket { per_second, burst } => {
                let allowed = *burst as f64 + per_second * horizon_ms as f64 / 1000.0;
                let share = sends.len() as f64 / allowed;
                if share > best_share {
                    best_share = share;
                    binding = format!("bucket {per_second}/s burst {burst}");
                }
                let mut level = 0.0f64;
                let mut last = 0u64;
                for at in &sends {
                    level = (level - (at - last) as f64 / 1000.0 * per_second).max(0.0) + 1.0;
                    last = *at;
                    if level > *burst as f64 {
                        violations += 1;
                    }
                }
            }
            // Costs come from answers, which this replay has none of.
            Limit::Budget { .. } => {}
            // The compared providers' defaults have no calendar days.
            Limit::PerDay { .. } => {}
        }
    }
    // The binding limit is the one whose quota is used most fully; the
    // others cannot be filled without breaking it.
    (best_share.min(1.0), violations, binding)
}

fn text(channel: &str, i: usize) -> Message {
    Message {
        channel: channel.into(),
        content: Content::Text(format!("message {i}")),
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    }
}

/// One storage setup: SQLite (one host only) or PostgreSQL.
enum Backend<'a> {
    Sqlite,
    Postgres(&'a crate::pg::PgServer),
}

/// `hosts` in-process hosts on one Tencent account of `sim`.
fn hosts(sim: &Sim, backend: &Backend<'_>, hosts: usize) -> (tempfile::TempDir, Vec<Arc<App>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    botbox::cli::sim::write_secrets(&secrets, sim.config()).expect("secrets");
    let storage = match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres(server) => {
            server.write_url(dir.path());
            server.storage_section("30s")
        }
    };
    // The simulator takes 5000/s: the quota is not what is measured.
    let providers = botbox::cli::sim::provider_sections(sim, &secrets).replace(
        "[providers.tencent]\n",
        "[providers.tencent]\nthrottle = [\"5000/1s\"]\n",
    );
    let text = format!(
        "[runtime]\nreload = false\n{storage}\n{providers}\n[channels.live]\nprovider = \"tencent\"\nmax_delay = \"1d\"\n"
    );
    let apps = (0..hosts)
        .map(|i| {
            let host_dir = dir.path().join(format!("host{i}"));
            std::fs::create_dir_all(&host_dir).expect("host dir");
            let path = host_dir.join("botbox.toml");
            std::fs::write(
                &path,
                text.replace("{ file = \"pg-url\" }", "{ file = \"../pg-url\" }"),
            )
            .expect("config");
            Arc::new(App::build(Config::load(&path).expect("config")).expect("app"))
        })
        .collect();
    (dir, apps)
}

struct Figures {
    accepts_per_s: f64,
    accept_p50_ms: f64,
    delivered_per_s: f64,
    end_to_end_p50_ms: f64,
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Accepts `n` messages spread over the hosts (each accepting from its own
/// thread), then starts every host and times the deliveries; then sends
/// messages one at a time and times accept → delivered.
async fn measure(backend: Backend<'_>, host_count: usize, n: usize) -> Figures {
    let sim = Sim::start(SimConfig {
        tencent: botbox_sim::TencentConfig {
            rate_per_second: 5000,
            ..SimConfig::fast(1.0).tencent
        },
        ..SimConfig::fast(1.0)
    })
    .await
    .expect("simulator");
    let (_dir, apps) = hosts(&sim, &backend, host_count);
    let per_host = n / host_count;
    let started = Instant::now();
    let threads: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(h, app)| {
            let app = app.clone();
            std::thread::spawn(move || {
                let channel = app.delivery.channel("live").expect("channel");
                (0..per_host)
                    .map(|i| {
                        let t = Instant::now();
                        app.delivery
                            .accept("bench", &channel, text("live", h * per_host + i))
                            .expect("accepted");
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().expect("accepting thread"));
    }
    let accepts_per_s = (per_host * host_count) as f64 / started.elapsed().as_secs_f64();
    let accept_p50_ms = p50(latencies);

    let stop = CancellationToken::new();
    let started = Instant::now();
    let workers: Vec<_> = apps
        .iter()
        .map(|a| a.delivery.start(stop.clone()))
        .collect();
    let total = per_host * host_count;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim.deliveries_to(SimProvider::Tencent).len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered_per_s =
        sim.deliveries_to(SimProvider::Tencent).len() as f64 / started.elapsed().as_secs_f64();

    // One at a time through the first host, the others idle but polling.
    let mut finished = apps[0].delivery.observers().finished.subscribe();
    let channel = apps[0].delivery.channel("live").expect("channel");
    let mut end_to_end = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        let receipt = apps[0]
            .delivery
            .accept("bench", &channel, text("live", 1_000_000 + i))
            .expect("accepted");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), finished.recv()).await {
                Ok(Ok(f)) if f.receipt_id == receipt.id => break,
                Ok(_) => continue,
                Err(_) => panic!("message {i} not delivered within 10 s"),
            }
        }
        end_to_end.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stop.cancel();
    for w in workers {
        w.wait().await;
    }
    Figures {
        accepts_per_s,
        accept_p50_ms,
        delivered_per_s,
        end_to_end_p50_ms: p50(end_to_end),
    }
}

fn shared_backend(report: &mut Report) {
    // Three hosts would be three processes, each with its own runtime:
    // give the in-process ones enough threads not to queue behind each
    // other's blocking outbox calls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .expect("runtime");
    let server = crate::pg::PgServer::start_durable();
    let n = 600;
    let rows = [
        ("SQLite, 1 host", Backend::Sqlite, 1),
        ("PostgreSQL, 1 host", Backend::Postgres(&server), 1),
        ("PostgreSQL, 3 hosts", Backend::Postgres(&server), 3),
    ];
    let mut reference: Option<f64> = None;
    for (name, backend, host_count) in rows {
        // Each row starts from an empty outbox.
        if let Backend::Postgres(s) = &backend {
            let _ = s.client().batch_execute(
                "DROP TABLE IF EXISTS botbox_messages, botbox_parts, botbox_sends, botbox_throttles, botbox_clock",
            );
        }
        let f = rt.block_on(measure(backend, host_count, n));
        let added = match reference {
            None => {
                reference = Some(f.end_to_end_p50_ms);
                "the reference".to_string()
            }
            Some(r) => format!("{:+.1} ms against SQLite", f.end_to_end_p50_ms - r),
        };
        report.add(
            "shared backend",
            format!("{name}: {n} messages to the Tencent simulator, quota raised to 5000/s"),
            f.delivered_per_s,
            "delivered/s",
            format!(
                "{:.0} accepts/s, accept p50 {:.2} ms; accept→delivered p50 {:.1} ms ({added})",
                f.accepts_per_s, f.accept_p50_ms, f.end_to_end_p50_ms
            ),
        );
    }
}

pub fn run(report: &mut Report) {
    let (n, per_second) = outbox_writes();
    report.add(
        "outbox",
        "accepted broadcasts written (SQLite WAL, synchronous=FULL)",
        per_second,
        "writes/s",
        format!("{n} messages through Delivery::accept from one thread, one after another"),
    );

    let day = 86_400_000;
    let endpoints: [(&str, ThrottleSpec, u64); 6] = [
        (
            "Tencent send_broadcast_msg",
            ThrottleSpec::windows(&[(1, 1000)]),
            3_600_000,
        ),
        (
            "Easemob all-users broadcast",
            ThrottleSpec::windows(&[(1, 1_800_000), (3, day)]),
            30 * day,
        ),
        (
            "Easemob online-users broadcast",
            ThrottleSpec::windows(&[(1, 60_000), (50, day)]),
            30 * day,
        ),
        (
            "Easemob chatrooms broadcast",
            ThrottleSpec::windows(&[(1, 1000), (10, 60_000), (100, day)]),
            30 * day,
        ),
        (
            "Bitrix24 REST",
            ThrottleSpec {
                limits: vec![Limit::LeakyBucket {
                    per_second: 2.0,
                    burst: 50,
                }],
            },
            3_600_000,
        ),
        (
            "BigBlueButton sendChatMessage",
            ThrottleSpec::windows(&[(5, 1000)]),
            3_600_000,
        ),
    ];
    for (name, spec, horizon) in endpoints {
        let (share, violations, binding) = utilisation(&spec, horizon);
        report.add(
            "throttle",
            format!("{name} ({spec}) at 10x oversubscription"),
            share * 100.0,
            "% of quota",
            format!(
                "binding limit {binding}; {violations} violations; jitter margin {} ms",
                ARRIVAL_JITTER.as_millis()
            ),
        );
        report.target("≥ 98%, 0 violations", share >= 0.98 && violations == 0);
    }
    shared_backend(report);
}
