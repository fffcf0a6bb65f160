//! Runs the Extism counterpart of botbox's dispatch benchmark and prints its
//! figures as one JSON object on stdout, for `host/benches/compare.rs` to
//! merge into its table.
//!
//! `botbox-bench-extism PLUGIN.wasm LATENCY_SAMPLES THROUGHPUT_MS`

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use extism::{CompiledPlugin, Manifest, PTR, Plugin, PluginBuilder, UserData, Wasm, host_fn};

// The null provider: the message crosses into the host and is dropped; the
// plugin gets a receipt id back, as from botbox's `send-broadcast`.
host_fn!(send_broadcast(_user_data: (); message: String) -> String {
    black_box(&message);
    Ok(String::new())
});

const EVENT: &str = "chat-message lobby alice: hello";

fn builder(path: &str) -> PluginBuilder<'static> {
    let manifest = Manifest::new([Wasm::file(path)]);
    PluginBuilder::new(manifest).with_wasi(false).with_function(
        "send_broadcast",
        [PTR],
        [PTR],
        UserData::new(()),
        send_broadcast,
    )
}

fn call(plugin: &mut Plugin) -> Result<()> {
    plugin
        .call::<&str, ()>("handle", EVENT)
        .context("calling handle")
}

/// p50 and p99 of `samples` timed calls, and calls per second over `window`.
fn measure(
    mut one: impl FnMut() -> Result<()>,
    samples: usize,
    window: Duration,
) -> Result<(f64, f64, f64)> {
    for _ in 0..samples / 10 {
        one()?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        one()?;
        times.push(started.elapsed());
    }
    times.sort();
    let p = |q: f64| {
        times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1e6
    };
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < window {
        for _ in 0..64 {
            one()?;
        }
        n += 64;
    }
    Ok((p(0.5), p(0.99), n as f64 / started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .context("usage: botbox-bench-extism PLUGIN.wasm [SAMPLES] [MS]")?;
    let samples: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let window = Duration::from_millis(args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2000));

    // Idiomatic Extism: one plugin instance, called again and again.
    let mut plugin = builder(path).build().context("loading the Extism plugin")?;
    let (reused_p50, reused_p99, reused_rate) = measure(|| call(&mut plugin), samples, window)?;

    // Like botbox: a fresh instance for every event, from a compiled plugin.
    let compiled = CompiledPlugin::new(builder(path)).context("compiling the Extism plugin")?;
    let (fresh_p50, fresh_p99, fresh_rate) = measure(
        || {
            let mut plugin = Plugin::new_from_compiled(&compiled)?;
            call(&mut plugin)
        },
        samples / 4,
        window,
    )?;

    let out = serde_json::json!({
        "extism_version": extism::extism_version().trim_end_matches('\0'),
        "reused": { "p50_us": reused_p50, "p99_us": reused_p99, "per_second": reused_rate },
        "fresh": { "p50_us": fresh_p50, "p99_us": fresh_p99, "per_second": fresh_rate },
    });
    println!("{out}");
    Ok(())
}
