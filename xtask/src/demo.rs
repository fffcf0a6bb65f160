//! `cargo xtask demo`: build the plugins, then run the host's embedded demo
//! configuration, which loads `target/plugins/*.wasm`.

use anyhow::Result;

use crate::{paths, plugins, setup, step};

pub fn run(extra_args: &[String]) -> Result<()> {
    let toolchain = setup::ensure()?;
    plugins::build(&toolchain)?;
    step::run(
        "run the demo",
        step::cargo()
            .current_dir(paths::root())
            .args(["run", "--release", "-p", "botbox", "--", "run", "--demo"])
            .args(extra_args),
    )?;
    Ok(())
}
