//! The throttle spaces requests by what the provider can have seen: at 10x
//! oversubscription, with every core busy with other work, the simulator
//! counts no request over its documented window at the time it received
//! it. Counts only; nothing here asserts a speed.

mod support;

use std::time::Duration;

use botbox::app::App;
use botbox::config::Config;
use botbox_sim::{Sim, SimConfig, SimProvider};
use support::busy::BusyCores;
use support::sims::sim_config;
use support::text_message;
use tokio_util::sync::CancellationToken;

/// Tencent's `send_broadcast_msg` allowing `per_second` calls a second,
/// offered ten times what `wanted` requests need; the worker runs until
/// the simulator has received `wanted` of them.
async fn broadcast_at_10x(per_second: u32, wanted: usize) {
    // A clock 20 times faster than real time on both sides: a second's
    // window is 50 ms of real time, so scheduling delays are twenty times
    // larger against the window than in real use.
    let scale = 20.0;
    let sim = Sim::start(SimConfig {
        tencent: botbox_sim::TencentConfig {
            rate_per_second: per_second,
            ..SimConfig::fast(scale).tencent
        },
        ..SimConfig::fast(scale)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(
        &sim,
        dir.path(),
        scale,
        "[channels.live]\nprovider = \"tencent\"\nmax_delay = \"100d\"\n",
    )
    .replace(
        "[providers.tencent]\n",
        &format!("[providers.tencent]\nthrottle = [\"{per_second}/1s\"]\n"),
    );
    std::fs::write(dir.path().join("botbox.toml"), &text).unwrap();
    let app = App::build(Config::load(&dir.path().join("botbox.toml")).unwrap()).unwrap();
    let channel = app.delivery.channel("live").unwrap();
    for i in 0..wanted * 10 {
        app.delivery
            .accept(
                &format!("p{}", i % 8),
                &channel,
                text_message("live", &format!("#{i}")),
            )
            .unwrap();
    }
    let busy = BusyCores::start();
    let stop = CancellationToken::new();
    let workers = app.delivery.start(stop.clone());
    // Generous: the count, not the time, is what is checked.
    let received = sim
        .wait_for_deliveries(Some(SimProvider::Tencent), wanted, Duration::from_secs(120))
        .await;
    stop.cancel();
    workers.wait().await;
    drop(busy);
    assert!(
        received.len() >= wanted,
        "only {} of {wanted} requests arrived",
        received.len()
    );
    let violations = sim.violations();
    assert!(
        violations.is_empty(),
        "the simulator counted requests over {per_second}/1s at its receive time: {violations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_a_second_at_10x_with_busy_cores_is_never_over_at_the_provider() {
    broadcast_at_10x(1, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_a_second_at_10x_with_busy_cores_is_never_over_at_the_provider() {
    broadcast_at_10x(5, 100).await;
}
