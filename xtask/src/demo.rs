//! `cargo xtask demo`: build the plugins, then run the host's embedded demo
//! configuration on them: `target/plugins/*.wasm`, or under
//! `CARGO_TARGET_DIR` when that is set (passed as `BOTBOX_DEMO_PLUGINS`).

use anyhow::Result;

use crate::{paths, plugins, setup, step};

pub fn run(extra_args: &[String]) -> Result<()> {
    let toolchain = setup::ensure()?;
    plugins::build(&toolchain)?;
    step::run(
        "run the demo",
        step::cargo()
            .current_dir(paths::root())
            .env("BOTBOX_DEMO_PLUGINS", paths::components_dir())
            .args(["run", "--release", "-p", "botbox", "--", "run", "--demo"])
            .args(extra_args),
    )?;
    Ok(())
}
