//! botbox side by side with bare wasmtime, Extism and native code, and its
//! reload, startup, memory, outbox and throttle figures: one run, one table,
//! also written to `target/bench/results.json`.
//!
//! `cargo xtask bench` builds what it needs (example plugins, the Extism
//! host and plugin) and runs this. Alone, `cargo bench -p botbox --bench
//! compare [-- SECTION…]` runs without the Extism rows; sections are
//! dispatch, reload, startup, delivery, quota, accepts, end-to-end. Set
//! BOTBOX_BENCH_QUICK=1 for a short run that checks the harness, not the
//! figures.

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../../../tests/support/pg.rs"]
mod pg;

mod admin_events;
mod delivery;
mod dispatch;
mod group_commit;
mod null_outbox;
mod quota;
mod reload;
mod report;
mod startup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use report::Report;

fn results_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench/results.json")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores available, load average {load} at start")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--memory-probe"
    {
        tokio::runtime::Runtime::new()
            .expect("tokio")
            .block_on(startup::memory_probe(Path::new(dir)));
        return;
    }
    // `cargo bench` passes --bench; anything else names sections.
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |section: &str| wanted.is_empty() || wanted.contains(&section);
    let quick = std::env::var_os("BOTBOX_BENCH_QUICK").is_some();
    let budget = if quick {
        dispatch::Budget {
            samples: 500,
            window: Duration::from_millis(200),
        }
    } else {
        dispatch::Budget {
            samples: 20_000,
            window: Duration::from_secs(2),
        }
    };

    if args.iter().any(|a| a == dispatch::UNTRACED_SECTION) {
        dispatch::install_subscriber(std::env::var_os(dispatch::UNTRACED_ENV).is_none());
        dispatch::untraced_child(&budget);
        return;
    }
    dispatch::install_subscriber(true);
    let mut report = Report::default();
    let machine = machine();
    eprintln!("machine: {machine}");
    report.facts.push(("machine".into(), machine.into()));
    if run("dispatch") {
        eprintln!("dispatch…");
        dispatch::run(&mut report, &budget);
    }
    if run("reload") || run("startup") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio");
        if run("reload") {
            eprintln!("reload…");
            rt.block_on(reload::run(&mut report));
        }
        if run("startup") {
            eprintln!("startup and memory…");
            rt.block_on(startup::run(&mut report));
        }
    }
    if run("accepts") {
        eprintln!("durable accepts…");
        group_commit::run(&mut report, quick);
        group_commit::run_postgres(&mut report, quick);
    }
    if run("end-to-end") {
        eprintln!("end to end through the admin API…");
        admin_events::run(&mut report, quick);
    }
    if run("delivery") {
        eprintln!("outbox and throttle…");
        delivery::run(&mut report);
    }
    if run("quota") {
        eprintln!("quota use over real HTTP, every core busy…");
        quota::run(&mut report, quick);
    }

    println!("{}", report.table());
    let path = results_path();
    match report.write_json(&path) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
