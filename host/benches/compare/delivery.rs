//! Delivery figures: outbox write throughput, and how much of each
//! provider endpoint's documented quota the throttle uses at 10×
//! oversubscription, with the violations it commits (must be 0).
//!
//! Throttle figures are computed in simulated time against the documented
//! windows (no network), so they are exact and repeatable; the simulator
//! tests in tests/delivery.rs check the same over real HTTP.

use std::sync::Arc;
use std::time::Instant;

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::throttle::{ARRIVAL_JITTER, Limit, Throttle, ThrottleSpec};
use botbox::wit::types::{Content, Message};

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
        }
    }
    // The binding limit is the one whose quota is used most fully; the
    // others cannot be filled without breaking it.
    (best_share.min(1.0), violations, binding)
}

pub fn run(report: &mut Report) {
    let (n, per_second) = outbox_writes();
    report.add(
        "outbox",
        "accepted broadcasts written (SQLite WAL, synchronous=FULL)",
        per_second,
        "writes/s",
        format!("{n} messages, one transaction and fsync each"),
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
}
