//! Reload latency of a Rust, a JS and a Python plugin, uncached and cached:
//! from the file written to the new version serving, through the real watch
//! path (notify, debounce, compile or cache fetch, describe, atomic swap),
//! and the swap alone (`Runtime::load`) to show what the debounce costs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use botbox::app::App;
use botbox::config::Config;
use botbox::runtime::reload::{Change, DEBOUNCE, Watcher};

use crate::report::Report;

const SECTION: &str = "reload";

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"))
}

/// The same component with a custom section appended: same behaviour, a
/// new content hash, so the compile cache misses.
pub fn variant(bytes: &[u8], tag: u32) -> Vec<u8> {
    let name = b"botbox-bench";
    let data = tag.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + data.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    out
}

/// As build tools should: a temporary file, then a rename.
pub fn write(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn wait_for_generation(app: &App, above: u64, started: Instant) -> Duration {
    loop {
        if let Some(p) = app.runtime.plugin("bot")
            && p.generation > above
        {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!("reload did not happen");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

struct Figures {
    size: usize,
    watch_uncached: f64,
    watch_cached: f64,
    swap_uncached: f64,
    swap_cached: f64,
}

async fn measure(name: &str, uncached_rounds: u32) -> Option<Figures> {
    let original = std::fs::read(example(name)).ok()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bot.wasm");
    write(&path, &variant(&original, 0));
    let toml = "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [channels.announcements]\nprovider = \"console\"\n\
         [plugins.bot]\npath = \"bot.wasm\"\nchannels = [\"lobby\", \"announcements\"]\n";
    let config = Config::parse(toml, &dir.path().join("botbox.toml"), dir.path()).expect("config");
    let app = Arc::new(App::build(config).expect("app"));
    assert!(app.load_plugins().await.is_empty(), "{name} loads");
    let cfg = app.config.plugins["bot"].clone();
    let generation = || app.runtime.plugin("bot").map(|p| p.generation).unwrap_or(0);

    // The swap alone: compile (or cache fetch), describe, install.
    let mut swap_uncached = Vec::new();
    let mut tag = 100;
    for _ in 0..uncached_rounds {
        tag += 1;
        write(&path, &variant(&original, tag));
        let started = Instant::now();
        app.runtime.load("bot", &cfg).await.expect("load");
        swap_uncached.push(started.elapsed());
    }
    let mut swap_cached = Vec::new();
    for round in 0..5 {
        write(&path, &variant(&original, 101 + round % 2));
        let started = Instant::now();
        app.runtime.load("bot", &cfg).await.expect("load");
        swap_cached.push(started.elapsed());
    }

    // The whole path, as `botbox run` and `botbox dev` see it.
    let (mut watcher, mut changes) = Watcher::start().expect("watcher");
    watcher
        .watch(&path, Change::Plugin("bot".into()))
        .expect("watch");
    let loader = {
        let app = app.clone();
        tokio::spawn(async move {
            while let Some(Change::Plugin(name)) = changes.recv().await {
                let cfg = app.config.plugins[&name].clone();
                if let Err(e) = app.runtime.load(&name, &cfg).await {
                    eprintln!("reload failed: {e}");
                }
            }
        })
    };
    let mut watch_uncached = Vec::new();
    for _ in 0..uncached_rounds {
        tag += 1;
        let before = generation();
        let started = Instant::now();
        write(&path, &variant(&original, tag));
        watch_uncached.push(wait_for_generation(&app, before, started).await);
    }
    let mut watch_cached = Vec::new();
    for round in 0..5 {
        let before = generation();
        let started = Instant::now();
        write(&path, &variant(&original, 101 + round % 2));
        watch_cached.push(wait_for_generation(&app, before, started).await);
    }
    loader.abort();
    Some(Figures {
        size: original.len(),
        watch_uncached: median(watch_uncached),
        watch_cached: median(watch_cached),
        swap_uncached: median(swap_uncached),
        swap_cached: median(swap_cached),
    })
}

pub async fn run(report: &mut Report) {
    for (name, lang, rounds) in [
        ("greeter", "Rust", 3),
        ("poll", "JS", 2),
        ("faq", "Python", 2),
    ] {
        let Some(f) = measure(name, rounds).await else {
            report.skip(format!(
                "reload of {name} ({lang}): {} missing; run `cargo xtask plugins`",
                example(name).display()
            ));
            continue;
        };
        let kb = f.size / 1024;
        let small = f.size <= 150 * 1024;
        report.add(
            SECTION,
            format!("{lang} {name} ({kb} KB), uncached: file written → serving"),
            f.watch_uncached,
            "ms",
            format!(
                "swap alone {:.1} ms; debounce {} ms",
                f.swap_uncached,
                DEBOUNCE.as_millis()
            ),
        );
        if small {
            report.target("≤ 250 ms", f.watch_uncached <= 250.0);
        }
        report.add(
            SECTION,
            format!("{lang} {name} ({kb} KB), cached: file written → serving"),
            f.watch_cached,
            "ms",
            format!(
                "swap alone {:.1} ms; debounce {} ms",
                f.swap_cached,
                DEBOUNCE.as_millis()
            ),
        );
        if small {
            report.target("≤ 20 ms", f.watch_cached <= 20.0);
        }
    }
}
