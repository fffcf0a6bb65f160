//! Reload latency of a Rust, a JS and a Python plugin, uncached and cached:
//! from the file written to the new version serving, through the real watch
//! path (notify, debounce, compile or cache fetch, describe, atomic swap),
//! and the swap alone (`Runtime::load`) to show what the debounce costs;
//! and `botbox dev`'s reload of the JS and Python bots with its incremental
//! compile cache, beside the same reload without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use botbox::app::{App, BuildOptions, ad_hoc};
use botbox::config::Config;
use botbox::runtime::CompileSource;
use botbox::runtime::compile::{DEFAULT_INCREMENTAL_CACHE_BYTES, IncrementalCache};
use botbox::runtime::reload::{Change, DEBOUNCE, Watcher};

use crate::report::Report;

const SECTION: &str = "reload";

/// An example plugin built by `cargo xtask plugins`, in the target dir
/// (`CARGO_TARGET_DIR`, relative to the workspace root, else `target/`).
pub fn example(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    target.join("plugins").join(format!("{name}.wasm"))
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

/// `botbox dev` after a build: a new host per save, sharing one
/// incremental compile cache across them, against the same path with no
/// incremental cache (how `botbox dev` reloaded before it had one).
struct DevFigures {
    /// File written → new version serving, incremental cache warm.
    incremental: f64,
    /// The same without an incremental cache: every save compiled whole.
    reference: f64,
    /// The first load of the session, which fills the cache.
    first: f64,
    /// Share of functions reused on a save.
    reused_percent: u64,
    /// A save of a real rebuild from an edited source, when one is given:
    /// file written → serving, and the share of functions reused.
    edited: Option<(f64, u64)>,
}

/// A rebuild of example `name` from an edited source, for the dev-loop
/// row: `BOTBOX_BENCH_EDITED_POLL=/path/poll.wasm` (or `_FAQ`), made by
/// the same componentize-js or componentize-py from the example with one
/// line changed.
fn edited_build(name: &str) -> Option<Vec<u8>> {
    let var = format!("BOTBOX_BENCH_EDITED_{}", name.to_uppercase());
    std::fs::read(std::env::var_os(var)?).ok()
}

async fn dev_load(
    dir: &Path,
    incremental: Option<&Arc<IncrementalCache>>,
    rounds: &mut u32,
) -> (Duration, CompileSource) {
    *rounds += 1;
    let storage = dir.join(format!("storage-{rounds}"));
    let options = BuildOptions {
        incremental: incremental.cloned(),
        ..BuildOptions::default()
    };
    let started = Instant::now();
    // As `botbox dev` after each build: ask the plugin what it wants (the
    // compile), then a new host granting that, which loads it from the
    // compile cache.
    let (config, source) =
        ad_hoc::config_with(&dir.join("bot.wasm"), &[], &storage, options.clone())
            .await
            .expect("ad hoc config");
    if std::env::var_os("BOTBOX_BENCH_QUICK").is_some() {
        eprintln!(
            "    asked ({source:?}) after {} ms",
            started.elapsed().as_millis()
        );
    }
    let app = App::build_with(config, options).expect("app");
    let cfg = app.config.plugins[ad_hoc::PLUGIN].clone();
    app.runtime.load(ad_hoc::PLUGIN, &cfg).await.expect("load");
    (started.elapsed(), source)
}

async fn measure_dev(name: &str, rounds: u32) -> Option<DevFigures> {
    let original = std::fs::read(example(name)).ok()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bot.wasm");
    let cache = IncrementalCache::new(DEFAULT_INCREMENTAL_CACHE_BYTES);
    let mut count = 0;
    write(&path, &variant(&original, 1000));
    let (first, _) = dev_load(dir.path(), Some(&cache), &mut count).await;
    let (mut with, mut without, mut reused) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        // Alternated, so both see the same machine load.
        write(&path, &variant(&original, 2000 + round));
        let (took, source) = dev_load(dir.path(), Some(&cache), &mut count).await;
        with.push(took);
        if let CompileSource::Incremental(reuse) = source {
            reused = reuse.percent();
        }
        write(&path, &variant(&original, 3000 + round));
        without.push(dev_load(dir.path(), None, &mut count).await.0);
    }
    // Last, so the figures above do not profit from its functions.
    let mut edited = None;
    if let Some(bytes) = edited_build(name) {
        write(&path, &bytes);
        let (took, source) = dev_load(dir.path(), Some(&cache), &mut count).await;
        if let CompileSource::Incremental(reuse) = source {
            edited = Some((took.as_secs_f64() * 1000.0, reuse.percent()));
        }
    }
    Some(DevFigures {
        edited,
        incremental: median(with),
        reference: median(without),
        first: first.as_secs_f64() * 1000.0,
        reused_percent: reused,
    })
}

pub async fn run(report: &mut Report) {
    // BOTBOX_BENCH_QUICK: one round, to check the harness.
    let dev_rounds = if std::env::var_os("BOTBOX_BENCH_QUICK").is_some() {
        1
    } else {
        3
    };
    for (name, lang, rounds) in [("poll", "JS", dev_rounds), ("faq", "Python", dev_rounds)] {
        let Some(f) = measure_dev(name, rounds).await else {
            continue;
        };
        eprintln!(
            "  {lang} dev loop: {:.0} ms (without the incremental cache {:.0} ms, {}% reused; \
             one-line edit: {:?})",
            f.incremental, f.reference, f.reused_percent, f.edited
        );
        report.add(
            SECTION,
            format!("{lang} {name}, dev loop: file written → serving new version"),
            f.incremental,
            "ms",
            format!(
                "{:.2}x of {:.0} ms without the incremental cache (same run); {}% of functions \
                 reused; first load of the session {:.0} ms; optimised code, nothing to swap later",
                f.incremental / f.reference,
                f.reference,
                f.reused_percent,
                f.first
            ),
        );
        report.target("≤ 1000 ms", f.incremental <= 1000.0);
        if let Some((ms, percent)) = f.edited {
            report.add(
                SECTION,
                format!(
                    "{lang} {name}, dev loop after a one-line source edit: file written → serving"
                ),
                ms,
                "ms",
                format!(
                    "{:.2}x of {:.0} ms without the incremental cache (same run); {percent}% of \
                     functions reused",
                    ms / f.reference,
                    f.reference
                ),
            );
            report.target("≤ 1000 ms", ms <= 1000.0);
        }
    }

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
