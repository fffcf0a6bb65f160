//! `cargo xtask bench`: every figure of BENCHMARKS.md in one run. Builds the
//! example plugins, the Extism plugin (with the guest toolchain) and the
//! Extism host (its own workspace: it pins its own wasmtime), then runs the
//! host's `compare` benchmark with the Extism binary and plugin it needs.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::setup::{self, TARGET};
use crate::{paths, plugins, step};

/// The crates of the Extism comparison, outside the host workspace.
fn extism_dir() -> PathBuf {
    paths::root().join("bench").join("extism")
}

fn extism_plugin_dir() -> PathBuf {
    paths::root().join("bench").join("extism-plugin")
}

pub fn run(extra_args: &[String]) -> Result<()> {
    let toolchain = setup::ensure()?;
    plugins::build_all(&toolchain)?;
    // The delivery section compares the shared backend with SQLite.
    setup::ensure_postgres()?;

    let plugin_target = paths::host_target_dir().join("bench").join("extism-plugin");
    step::run(
        &format!("build the Extism plugin ({})", toolchain.describe()),
        &mut toolchain.build_command(&extism_plugin_dir(), &plugin_target),
    )?;
    let plugin = plugin_target
        .join(TARGET)
        .join("release")
        .join("botbox_bench_extism_plugin.wasm");
    if !plugin.is_file() {
        bail!("the Extism plugin build left no {}", plugin.display());
    }

    let host_target = paths::host_target_dir().join("bench").join("extism");
    let mut build_host = step::cargo();
    step::isolate(&mut build_host);
    step::run(
        "build the Extism host",
        build_host
            .current_dir(extism_dir())
            .env("CARGO_TARGET_DIR", &host_target)
            .args(["build", "--release", "--locked"]),
    )?;
    let host = host_target.join("release").join("botbox-bench-extism");

    step::run(
        "run the comparison",
        step::cargo()
            .current_dir(paths::root())
            .env("BOTBOX_BENCH_EXTISM", &host)
            .env("BOTBOX_BENCH_EXTISM_PLUGIN", &plugin)
            .args(["bench", "-p", "botbox", "--bench", "compare", "--"])
            .args(extra_args),
    )?;
    Ok(())
}
