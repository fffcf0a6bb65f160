//! Startup with 100 plugins, cold and with the compile cache, and the host
//! memory each loaded, idle plugin costs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use botbox::app::App;
use botbox::config::Config;

use crate::reload::{example, variant};
use crate::report::Report;

const SECTION: &str = "startup";
const PLUGINS: usize = 100;

/// 100 plugins, each a different build of the greeter (a distinct content
/// hash, so a cold start compiles all 100).
fn prepare(dir: &Path, greeter: &[u8]) {
    let mut toml = String::from(
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [channels.announcements]\nprovider = \"console\"\n",
    );
    for i in 0..PLUGINS {
        std::fs::write(
            dir.join(format!("g{i:03}.wasm")),
            variant(greeter, i as u32),
        )
        .expect("write plugin");
        let _ = write!(
            toml,
            "[plugins.g{i:03}]\npath = \"g{i:03}.wasm\"\nchannels = [\"lobby\", \"announcements\"]\n"
        );
    }
    std::fs::write(dir.join("botbox.toml"), toml).expect("write config");
}

async fn start(dir: &Path) -> App {
    let text = std::fs::read_to_string(dir.join("botbox.toml")).expect("config");
    let config = Config::parse(&text, &dir.join("botbox.toml"), dir).expect("config parses");
    let app = App::build(config).expect("app");
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "plugins load: {errors:?}");
    app
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs in a fresh process (`--memory-probe DIR`), so nothing earlier in the
/// benchmark has warmed the allocator: RSS with the host built and no
/// plugin, then with all of them loaded from the cache. Prints JSON.
pub async fn memory_probe(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("botbox.toml")).expect("config");
    let config = Config::parse(&text, &dir.join("botbox.toml"), dir).expect("config parses");
    let app = App::build(config).expect("app");
    let empty = rss_bytes().unwrap_or(0);
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "plugins load: {errors:?}");
    let loaded = rss_bytes().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({ "empty": empty, "loaded": loaded, "plugins": PLUGINS })
    );
}

pub async fn run(report: &mut Report) {
    let Ok(greeter) = std::fs::read(example("greeter")) else {
        report.skip(format!(
            "startup: {} missing; run `cargo xtask plugins`",
            example("greeter").display()
        ));
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path(), &greeter);

    let started = Instant::now();
    let app = start(dir.path()).await;
    let cold = started.elapsed().as_secs_f64() * 1000.0;
    drop(app);
    let started = Instant::now();
    let app = start(dir.path()).await;
    let cached = started.elapsed().as_secs_f64() * 1000.0;
    drop(app);

    let kb = greeter.len() / 1024;
    report.add(
        SECTION,
        format!("{PLUGINS} plugins ({kb} KB Rust components), cold"),
        cold,
        "ms",
        format!("{:.1} ms a plugin, compiling each", cold / PLUGINS as f64),
    );
    report.add(
        SECTION,
        format!("{PLUGINS} plugins, compile cache warm"),
        cached,
        "ms",
        format!(
            "{:.1} ms a plugin; {:.0}x faster than cold",
            cached / PLUGINS as f64,
            cold / cached
        ),
    );
    report.target("< 1000 ms", cached < 1000.0);

    let probe = std::env::current_exe().ok().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("--memory-probe")
            .arg(dir.path())
            .output()
            .ok()
    });
    let figures = probe
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    match figures {
        Some(v) => {
            let empty = v["empty"].as_f64().unwrap_or(0.0);
            let loaded = v["loaded"].as_f64().unwrap_or(0.0);
            let per = (loaded - empty) / PLUGINS as f64 / 1024.0;
            report.add(
                "memory",
                "host RSS per loaded, idle plugin (greeter, from cache)",
                per,
                "KB",
                format!(
                    "RSS {:.1} MB with no plugin, {:.1} MB with {PLUGINS}",
                    empty / 1048576.0,
                    loaded / 1048576.0
                ),
            );
        }
        None => report.skip("memory: the --memory-probe subprocess failed"),
    }
}
