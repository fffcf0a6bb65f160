//! Reload latency: from a plugin file written to the new version serving
//! events, through the real watch path (notify, debounce, compile or cache
//! fetch, describe, atomic swap), uncached and cached, for a small Rust
//! component and the JS and Python ones.
//!
//! `cargo bench -p botbox --bench reload` after `cargo xtask plugins`.
//! The figures include the 150 ms debounce, which is there on purpose:
//! editors save in bursts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use botbox::app::App;
use botbox::config::Config;
use botbox::runtime::reload::{Change, Watcher};

fn plugin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"))
}

/// The same component with a custom section appended: same behaviour, a
/// new content hash, so the compile cache misses.
fn variant(bytes: &[u8], tag: u32) -> Vec<u8> {
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

fn write(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn wait_for_generation(app: &App, above: u64) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(p) = app.runtime.plugin("bot")
            && p.generation > above
        {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!("reload did not happen");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(name: &str, memory_mb: u32) -> Option<(usize, Duration, Duration)> {
    let source = plugin(name);
    let Ok(original) = std::fs::read(&source) else {
        println!(
            "{name:<10} skipped: {} missing (run `cargo xtask plugins`)",
            source.display()
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bot.wasm");
    write(&path, &variant(&original, 0));
    let toml = format!(
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [channels.announcements]\nprovider = \"console\"\n\
         [plugins.bot]\npath = \"bot.wasm\"\nchannels = [\"lobby\", \"announcements\"]\nlimits = {{ memory_mb = {memory_mb} }}\n"
    );
    let config = Config::parse(&toml, &dir.path().join("botbox.toml"), dir.path()).expect("config");
    let app = Arc::new(App::build(config).expect("app"));
    assert!(app.load_plugins().await.is_empty(), "{name} loads");

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
    let generation = || app.runtime.plugin("bot").map(|p| p.generation).unwrap_or(0);

    let mut uncached = Vec::new();
    for tag in 1..=3 {
        let before = generation();
        write(&path, &variant(&original, tag));
        uncached.push(wait_for_generation(&app, before).await);
    }
    let mut cached = Vec::new();
    for round in 0..5 {
        // Alternate between two versions already compiled.
        let before = generation();
        write(&path, &variant(&original, 1 + round % 2));
        cached.push(wait_for_generation(&app, before).await);
    }
    loader.abort();
    Some((original.len(), median(uncached), median(cached)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "reload latency: file written -> new version serving (median; includes the 150 ms debounce)"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12}",
        "plugin", "size", "uncached", "cached"
    );
    for (name, lang, memory) in [
        ("greeter", "rust", 64),
        ("countdown", "c", 64),
        ("poll", "js", 64),
        ("faq", "python", 64),
    ] {
        if let Some((size, uncached, cached)) = measure(name, memory).await {
            println!(
                "{:<10} {:>9} KB {:>9} ms {:>9} ms   ({lang})",
                name,
                size / 1024,
                uncached.as_millis(),
                cached.as_millis()
            );
        }
    }
}
