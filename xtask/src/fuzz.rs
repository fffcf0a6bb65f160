//! `cargo xtask fuzz [SECONDS] [TARGET…]`: builds the fuzz targets in fuzz/
//! with libFuzzer's coverage instrumentation and runs each for a bounded
//! time; `cargo xtask test` runs every target for [`CI_SECONDS`].
//!
//! This is what `cargo fuzz run` does, without installing cargo-fuzz and
//! without a nightly compiler: the coverage flags are stable rustc flags.
//! (cargo-fuzz adds AddressSanitizer, which needs nightly; the code under
//! test is safe Rust, where a bug shows as a panic, which libFuzzer catches.)

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::{paths, step};

/// Every target, as named in fuzz/Cargo.toml.
pub const TARGETS: [&str; 4] = ["provider_answers", "webhooks", "config", "messages"];

/// How long CI runs each target.
pub const CI_SECONDS: u32 = 20;

/// The target triple is explicit so RUSTFLAGS reach only the fuzzed code,
/// not build scripts and proc macros (which would not link against libFuzzer).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing";

fn fuzz_dir() -> PathBuf {
    paths::root().join("fuzz")
}

/// Its own target dir: instrumented builds never mix with the host's.
fn target_dir() -> PathBuf {
    fuzz_dir().join("target")
}

pub fn build() -> Command {
    let mut cmd = step::cargo();
    step::isolate(&mut cmd);
    cmd.current_dir(fuzz_dir())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("RUSTFLAGS", RUSTFLAGS)
        .args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "--target",
            TRIPLE,
        ]);
    cmd
}

/// Checks that `fuzz/Cargo.lock` still matches the host crate's
/// dependencies. The fuzz build is `--locked` and comes last in `xtask
/// test`, so a host dependency added without updating this lock used to
/// fail the run only after every other step; this fails it first, and says
/// what to run.
pub fn check_lock() -> Command {
    let mut cmd = step::cargo();
    step::isolate(&mut cmd);
    cmd.current_dir(fuzz_dir())
        .args(["metadata", "--locked", "--format-version", "1"])
        .stdout(std::process::Stdio::null());
    cmd
}

/// Runs one target for `seconds`. New inputs go to a scratch corpus; the
/// committed seeds in fuzz/corpus/TARGET are read, never written. A finding
/// is written to fuzz/artifacts/TARGET/ and fails the run.
pub fn run_target(target: &str, seconds: u32) -> Result<Command> {
    let scratch = target_dir().join("corpus").join(target);
    let artifacts = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(target_dir().join(TRIPLE).join("release").join(target));
    cmd.current_dir(fuzz_dir())
        .arg(&scratch)
        .arg(fuzz_dir().join("corpus").join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    Ok(cmd)
}

pub fn run(args: &[String]) -> Result<()> {
    let (seconds, targets) = match args.split_first() {
        Some((s, rest)) if s.parse::<u32>().is_ok() => (s.parse()?, rest),
        _ => (CI_SECONDS, args),
    };
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for t in &targets {
        if !TARGETS.contains(t) {
            bail!(
                "no fuzz target `{t}`; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    step::run("fuzz (build)", &mut build())?;
    for t in targets {
        step::run(
            &format!("fuzz ({t}, {seconds} s)"),
            &mut run_target(t, seconds)?,
        )?;
    }
    Ok(())
}
