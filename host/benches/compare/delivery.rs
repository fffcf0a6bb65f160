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
/// simulated time and measures it against the documented windows. Each
/// request is answered `round_trip_ms` after it leaves, as the delivery
/// worker tells its throttle (`Throttle::answered`); the latency is taken
/// to be the same for every request, so the provider sees the gaps the
/// requests left with.
fn utilisation(spec: &ThrottleSpec, horizon_ms: u64, round_trip_ms: u64) -> (f64, usize, String) {
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
        throttle.answered(at, at + round_trip_ms);
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
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite,
    Postgres(&'a crate::pg::PgServer),
}

/// The Tencent simulator's broadcast quota and the host's throttle, both
/// raised so far that storage and the worker, not the quota, are measured.
const RAISED_QUOTA: u32 = 50_000;

/// Channels the messages are spread over: each channel's messages go one
/// at a time, in order; different channels' go together.
const CHANNELS: usize = 16;

fn channel_name(i: usize) -> String {
    format!("live{}", i % CHANNELS)
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
    let providers = botbox::cli::sim::provider_sections(sim, &secrets).replace(
        "[providers.tencent]\n",
        &format!("[providers.tencent]\nthrottle = [\"{RAISED_QUOTA}/1s\"]\n"),
    );
    let channels: String = (0..CHANNELS)
        .map(|i| {
            format!(
                "[channels.{}]\nprovider = \"tencent\"\nmax_delay = \"1d\"\n",
                channel_name(i)
            )
        })
        .collect();
    let text = format!("[runtime]\nreload = false\n{storage}\n{providers}\n{channels}");
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
    end_to_end_p99_ms: f64,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = ((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1));
    v.get(at).copied().unwrap_or(0.0)
}

/// Accepts `n` messages spread over the hosts (each accepting from its own
/// thread), then starts every host's workers, each sending at most
/// `in_flight` requests at once per endpoint, and times the deliveries;
/// then sends `lone` messages one at a time and times accept → delivered.
async fn measure(
    backend: Backend<'_>,
    host_count: usize,
    n: usize,
    in_flight: usize,
    lone: usize,
) -> Figures {
    let sim = Sim::start(SimConfig {
        tencent: botbox_sim::TencentConfig {
            rate_per_second: RAISED_QUOTA,
            ..SimConfig::fast(1.0).tencent
        },
        ..SimConfig::fast(1.0)
    })
    .await
    .expect("simulator");
    let (_dir, apps) = hosts(&sim, &backend, host_count);
    for app in &apps {
        app.delivery.set_max_in_flight(in_flight);
    }
    let per_host = n / host_count;
    let started = Instant::now();
    let threads: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(h, app)| {
            let app = app.clone();
            std::thread::spawn(move || {
                (0..per_host)
                    .map(|i| {
                        let k = h * per_host + i;
                        let channel = app.delivery.channel(&channel_name(k)).expect("channel");
                        let t = Instant::now();
                        app.delivery
                            .accept("bench", &channel, text(&channel_name(k), k))
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
    let accept_p50_ms = percentile(&latencies, 0.5);

    let stop = CancellationToken::new();
    let started = Instant::now();
    let workers: Vec<_> = apps
        .iter()
        .map(|a| a.delivery.start(stop.clone()))
        .collect();
    let total = per_host * host_count;
    let deadline = Instant::now() + Duration::from_secs(300);
    // The simulator's counter, not its list: copying every delivery each
    // poll would take the CPU (and the simulator's lock) from what is
    // measured.
    let delivered = || sim.stats(SimProvider::Tencent).deliveries as usize;
    while delivered() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered_per_s = delivered() as f64 / started.elapsed().as_secs_f64();

    // One at a time through the first host, the others idle but polling:
    // whichever host's poll finds it first may deliver it, so every host's
    // finished messages are heard.
    let (heard, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let listeners: Vec<_> = apps
        .iter()
        .map(|app| {
            let mut rx = app.delivery.observers().finished.subscribe();
            let heard = heard.clone();
            tokio::spawn(async move {
                while let Ok(f) = rx.recv().await {
                    if heard.send(f.receipt_id).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let mut end_to_end = Vec::new();
    for i in 0..lone {
        let name = channel_name(i);
        let channel = apps[0].delivery.channel(&name).expect("channel");
        let t = Instant::now();
        let receipt = apps[0]
            .delivery
            .accept("bench", &channel, text(&name, 1_000_000 + i))
            .expect("accepted");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), finished.recv()).await {
                Ok(Some(id)) if id == receipt.id => break,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!("message {i} not delivered within 10 s"),
            }
        }
        end_to_end.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for l in listeners {
        l.abort();
    }
    stop.cancel();
    for w in workers {
        w.wait().await;
    }
    Figures {
        accepts_per_s,
        accept_p50_ms,
        delivered_per_s,
        end_to_end_p50_ms: percentile(&end_to_end, 0.5),
        end_to_end_p99_ms: percentile(&end_to_end, 0.99),
    }
}

fn shared_backend(report: &mut Report, quick: bool) {
    // Three hosts would be three processes, each with its own runtime:
    // give the in-process ones enough threads not to queue behind each
    // other's blocking outbox calls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .expect("runtime");
    let server = crate::pg::PgServer::start_durable();
    // A full backlog: an endpoint holds no more waiting.
    let (n, lone) = if quick {
        (600, 30)
    } else {
        (botbox::delivery::MAX_BACKLOG, 300)
    };
    // The figures for the sequential worker (one request at a
    // time, five writes per message), from an earlier run on this machine.
    let rows = [
        ("SQLite, 1 host", Backend::Sqlite, 1, "749/s, p50 1.2 ms"),
        (
            "PostgreSQL, 1 host",
            Backend::Postgres(&server),
            1,
            "175/s, p50 6.4 ms",
        ),
        (
            "PostgreSQL, 3 hosts",
            Backend::Postgres(&server),
            3,
            "336/s",
        ),
    ];
    let reset = |backend: &Backend<'_>| {
        // Each measurement starts from an empty outbox.
        if let Backend::Postgres(s) = backend {
            let _ = s.client().batch_execute(
                "DROP TABLE IF EXISTS botbox_messages, botbox_parts, botbox_sends, botbox_throttles, botbox_clock",
            );
        }
    };
    let mut pg_one_host: Option<f64> = None;
    for (name, backend, host_count, before) in rows {
        // The same run with one request in flight per endpoint: the
        // concurrency's share of the figure, measured beside it.
        reset(&backend);
        let one = rt.block_on(measure(backend, host_count, n, 1, lone.min(30)));
        reset(&backend);
        let f = rt.block_on(measure(
            backend,
            host_count,
            n,
            botbox::delivery::MAX_IN_FLIGHT,
            lone,
        ));
        report.add(
            "delivery",
            format!(
                "{name}: {n} messages over {CHANNELS} channels to the Tencent simulator, quota raised to {RAISED_QUOTA}/s"
            ),
            f.delivered_per_s,
            "delivered/s",
            format!(
                "accept→delivered p50 {:.2} ms, p99 {:.2} ms ({lone} lone messages); {:.0} accepts/s, accept p50 {:.2} ms; \
                 same run, one request in flight: {:.0} delivered/s ({:.1}x), p50 {:.2} ms; the issue's sequential worker: {before}",
                f.end_to_end_p50_ms,
                f.end_to_end_p99_ms,
                f.accepts_per_s,
                f.accept_p50_ms,
                one.delivered_per_s,
                f.delivered_per_s / one.delivered_per_s.max(f64::MIN_POSITIVE),
                one.end_to_end_p50_ms,
            ),
        );
        match (backend, host_count) {
            (Backend::Sqlite, _) => report.target(
                "≥ 5,000 delivered/s, accept→delivered p50 ≤ 1 ms",
                f.delivered_per_s >= 5000.0 && f.end_to_end_p50_ms <= 1.0,
            ),
            (Backend::Postgres(_), 1) => pg_one_host = Some(f.delivered_per_s),
            (Backend::Postgres(_), _) => {
                let scale = f.delivered_per_s / pg_one_host.unwrap_or(f64::INFINITY);
                report.target(
                    format!("≥ 3,000 delivered/s and ≥ 2.5x one host (here {scale:.2}x)"),
                    f.delivered_per_s >= 3000.0 && scale >= 2.5,
                );
            }
        }
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
    // Answers as quick as the simulator's on loopback (the quota section
    // measures those over real HTTP), and as slow as a provider across
    // the world's: a window counts a request until its answer proves it
    // arrived, so a slow answer costs quota.
    let (near, far) = (1, 100);
    for (name, spec, horizon) in endpoints {
        let (share, violations, binding) = utilisation(&spec, horizon, near);
        let (far_share, far_violations, _) = utilisation(&spec, horizon, far);
        report.add(
            "throttle",
            format!("{name} ({spec}) at 10x oversubscription, simulated time"),
            share * 100.0,
            "% of quota",
            format!(
                "binding limit {binding}; {violations} violations; answers {near} ms after each request; \
                 answered after {far} ms: {:.1}%, {far_violations} violations; jitter margin {} ms",
                far_share * 100.0,
                ARRIVAL_JITTER.as_millis()
            ),
        );
        report.target("≥ 99%, 0 violations", share >= 0.99 && violations == 0);
    }
    shared_backend(report, std::env::var_os("BOTBOX_BENCH_QUICK").is_some());
}
