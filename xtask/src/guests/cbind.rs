//! C bindings for the `bot` world, generated in-process with the
//! `wit-bindgen-c` crate: the same files `wit-bindgen c wit --world bot`
//! writes, without installing the CLI.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wit_parser::Resolve;

/// The world every plugin targets.
pub const WORLD: &str = "bot";

/// The files [`generate`] writes, in `out_dir`: `bot.h`, `bot.c` and
/// `bot_component_type.o` (a wasm object whose custom section carries the
/// world, so the linked module can be made a component).
pub fn outputs(out_dir: &Path) -> [PathBuf; 3] {
    [
        out_dir.join(format!("{WORLD}.h")),
        out_dir.join(format!("{WORLD}.c")),
        out_dir.join(format!("{WORLD}_component_type.o")),
    ]
}

/// Generate the C bindings of world [`WORLD`] of the WIT package in
/// `wit_dir` (a directory or a single `.wit` file) into `out_dir`.
pub fn generate(wit_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit_dir)
        .with_context(|| format!("reading the WIT package at {}", wit_dir.display()))?;
    let world = resolve
        .select_world(&[package], Some(WORLD))
        .with_context(|| format!("{} has no world `{WORLD}`", wit_dir.display()))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating C bindings")?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for (name, bytes) in files.iter() {
        let path = out_dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
