//! Quota use over real HTTP: a host's delivery worker against the
//! simulator at 10x its endpoint's documented rate, in real time, while
//! every core also runs a busy loop. The share is measured from the times
//! the simulator received the requests, and the violations are the ones
//! the simulator counted at receipt: what the provider would see.

use std::sync::Arc;
use std::time::Duration;

use botbox::app::App;
use botbox::config::Config;
use botbox::wit::types::{Content, Message};
use botbox_sim::{Sim, SimConfig, SimProvider};
use tokio_util::sync::CancellationToken;

use crate::report::Report;
use crate::support::busy::BusyCores;

const SECTION: &str = "quota";

/// The target: the share of the binding window used.
const TARGET: f64 = 0.99;

/// One endpoint's figures.
struct Use {
    requests: usize,
    /// The period over the mean time between a request and the one
    /// `count` after it, as the simulator received them: 1.0 is every
    /// window full.
    share: f64,
    violations: u64,
}

/// Tencent's `send_broadcast_msg` at `per_second` (1 by default, 5 on
/// higher plans), offered ten times that for `seconds`.
async fn tencent_broadcast(per_second: u32, seconds: u64) -> Use {
    let sim = Sim::start(SimConfig {
        tencent: botbox_sim::TencentConfig {
            rate_per_second: per_second,
            ..SimConfig::fast(1.0).tencent
        },
        ..SimConfig::fast(1.0)
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    botbox::cli::sim::write_secrets(&secrets, sim.config()).expect("secrets");
    let providers = botbox::cli::sim::provider_sections(&sim, &secrets).replace(
        "[providers.tencent]\n",
        &format!("[providers.tencent]\nthrottle = [\"{per_second}/1s\"]\n"),
    );
    let text = format!(
        "[runtime]\nreload = false\n{providers}\n[channels.live]\nprovider = \"tencent\"\nmax_delay = \"1d\"\n"
    );
    let path = dir.path().join("botbox.toml");
    std::fs::write(&path, text).expect("config");
    let app = Arc::new(App::build(Config::load(&path).expect("config")).expect("app"));
    let channel = app.delivery.channel("live").expect("channel");
    // Ten times what the window lets through in the run: the queue never
    // runs dry, so every gap is the throttle's.
    let offered = (10 * u64::from(per_second) * seconds) as usize;
    for i in 0..offered {
        let message = Message {
            channel: "live".into(),
            content: Content::Text(format!("message {i}")),
            sender: None,
            extra: None,
            idempotency_key: None,
            reply_to: None,
            options: None,
        };
        // From 16 plugins, as a host with many bots sends.
        app.delivery
            .accept(&format!("p{}", i % 16), &channel, message)
            .expect("accepted");
    }
    let stop = CancellationToken::new();
    let workers = app.delivery.start(stop.clone());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.cancel();
    workers.wait().await;

    let mut received: Vec<Duration> = sim
        .requests_to(SimProvider::Tencent)
        .into_iter()
        .filter(|r| r.path.ends_with("send_broadcast_msg"))
        .map(|r| r.at)
        .collect();
    received.sort();
    let count = per_second as usize;
    let gaps: Vec<f64> = received
        .windows(count + 1)
        .map(|w| (w[count] - w[0]).as_secs_f64())
        .collect();
    let share = if gaps.is_empty() {
        0.0
    } else {
        1.0 / (gaps.iter().sum::<f64>() / gaps.len() as f64)
    };
    let violations = sim
        .violation_counts()
        .into_iter()
        .filter(|((p, _), _)| *p == SimProvider::Tencent)
        .map(|(_, n)| n)
        .sum();
    Use {
        requests: received.len(),
        share,
        violations,
    }
}

pub fn run(report: &mut Report, quick: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seconds = if quick { 3 } else { 12 };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    let busy = BusyCores::start();
    let (one, five) = rt.block_on(async {
        tokio::join!(tencent_broadcast(1, seconds), tencent_broadcast(5, seconds))
    });
    drop(busy);
    for (name, per_second, u) in [
        ("Tencent send_broadcast_msg (1/1s)", 1, one),
        ("Tencent send_broadcast_msg, higher plan (5/1s)", 5, five),
    ] {
        report.add(
            SECTION,
            format!("{name} at 10x oversubscription, every core busy, real HTTP"),
            u.share * 100.0,
            "% of quota",
            format!(
                "{} requests in {seconds} s; {} violations at the simulator's receive time; \
                 {} busy-loop threads; load {load} at start",
                u.requests,
                u.violations,
                std::thread::available_parallelism().map_or(0, |n| n.get()),
            ),
        );
        report.reference(format!(
            "{per_second}/1s documented; 96.2% before (margin counted on every send)"
        ));
        report.target(
            format!("≥ {:.0}%, 0 violations", TARGET * 100.0),
            u.share >= TARGET && u.violations == 0,
        );
    }
}
