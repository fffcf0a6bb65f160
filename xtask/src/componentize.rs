//! `cargo xtask componentize CORE.wasm OUT.wasm`: turn any core module built
//! with the SDK (for example a plugin outside this repository) into a checked
//! component, without installing wasm-tools.

use std::fs;

use anyhow::{Context, Result, bail};

use crate::component;

pub fn run(args: &[String]) -> Result<()> {
    let [core, out] = args else {
        bail!("usage: cargo xtask componentize CORE.wasm OUT.wasm");
    };
    let module = fs::read(core).with_context(|| format!("reading {core}"))?;
    let bytes = component::componentize(&module).with_context(|| core.clone())?;
    component::check(&bytes).with_context(|| format!("{core} is not a valid botbox plugin"))?;
    fs::write(out, &bytes).with_context(|| format!("writing {out}"))?;
    eprintln!("{out}: {} bytes", bytes.len());
    Ok(())
}
