//! `cargo xtask inspect FILE…`: print what a component imports and exports,
//! and whether it passes the plugin check.

use std::fs;

use anyhow::{Context, Result, bail};

use crate::component;

pub fn run(files: &[String]) -> Result<()> {
    if files.is_empty() {
        bail!("name at least one component, e.g. `cargo xtask inspect target/plugins/*.wasm`");
    }
    let mut failed = 0;
    for file in files {
        let bytes = fs::read(file).with_context(|| format!("reading {file}"))?;
        println!("{file} ({} bytes)", bytes.len());
        let iface = match component::interface(&bytes) {
            Ok(iface) => iface,
            Err(err) => {
                println!("  cannot read it: {err:#}");
                failed += 1;
                continue;
            }
        };
        for (label, items) in [("import", &iface.imports), ("export", &iface.exports)] {
            for item in items {
                println!("  {label} {} [{}]", item.name, item.functions.join(", "));
            }
        }
        let wasi: Vec<&str> = iface
            .imports
            .iter()
            .map(|i| i.name.as_str())
            .filter(|name| component::is_wasi(name))
            .collect();
        match component::check_with(&bytes, true) {
            Ok(_) if wasi.is_empty() => println!("  ok: a valid botbox plugin"),
            Ok(_) if component::check(&bytes).is_ok() => println!(
                "  ok: a valid botbox plugin that also imports {} WASI interfaces for outbound \
                 HTTP (wasi:http and the types it uses), served only to hosts the operator grants",
                wasi.len()
            ),
            Ok(_) => println!(
                "  ok: a valid botbox plugin that also imports {} WASI interfaces \
                 (JS and Python runtimes do); the host gives it a WASI context that grants nothing \
                 (wasi:http only to hosts the operator grants)",
                wasi.len()
            ),
            Err(err) => {
                println!("  NOT a valid botbox plugin: {err:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} components failed the plugin check",
            files.len()
        );
    }
    Ok(())
}
