//! `cargo xtask plugins`: build every bot in `plugins/` for
//! wasm32-unknown-unknown and turn each core module into a checked component
//! at `<target>/plugins/<name>.wasm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::setup::{self, GuestToolchain, TARGET};
use crate::{component, guests, paths, step};

/// One plugin crate of the guest workspace.
#[derive(Debug)]
pub struct Plugin {
    /// The package name; also the component's file name.
    pub name: String,
    /// The library's crate name: the core module's file name.
    lib_name: String,
}

/// `cargo xtask plugins`.
pub fn run() -> Result<()> {
    let toolchain = setup::ensure()?;
    build_all(&toolchain).map(drop)
}

/// The Rust plugins, then the JS, Python and C ones; returns every component.
pub fn build_all(toolchain: &GuestToolchain) -> Result<Vec<PathBuf>> {
    let mut outputs = build(toolchain)?;
    let rust_names: Vec<String> = outputs
        .iter()
        .filter_map(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    outputs.extend(guests::build(&guests::Lang::ALL, &rust_names)?);
    Ok(outputs)
}

/// Build, componentize and check every plugin; returns the components.
pub fn build(toolchain: &GuestToolchain) -> Result<Vec<PathBuf>> {
    let workspace = paths::plugins_workspace();
    let plugins = discover(&workspace)?;
    let target_dir = paths::guest_target_dir();

    // One build per plugin: cargo unifies a dependency's features across the
    // packages of one invocation, so building them together would turn the
    // SDK's `http` feature (botbox:bot@0.2.0) on for every 0.1.0 plugin.
    let mut compile_time = std::time::Duration::ZERO;
    for plugin in &plugins {
        compile_time += step::run(
            &format!("build plugin {} ({})", plugin.name, toolchain.describe()),
            toolchain
                .build_command(&workspace, &target_dir)
                .args(["-p", &plugin.name]),
        )?;
    }

    let out_dir = paths::components_dir();
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // A rebuilt xtask may encode differently: treat its outputs as stale.
    let xtask_built = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified())
        .ok();

    let started = Instant::now();
    let mut outputs = Vec::new();
    for plugin in &plugins {
        let core = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", plugin.lib_name));
        let out = out_dir.join(format!("{}.wasm", plugin.name));
        let status = if is_fresh(&out, &[Some(modified(&core)?), xtask_built]) {
            "up to date"
        } else {
            make_component(&core, &out)
                .with_context(|| format!("plugin `{}` ({})", plugin.name, core.display()))?;
            "componentized"
        };
        let size = fs::metadata(&out).map_or(0, |m| m.len());
        eprintln!(
            "    {:<12} {:>8} bytes  {status:<13}  {}",
            plugin.name,
            size,
            out.display()
        );
        outputs.push(out);
    }
    eprintln!(
        "==> {} plugin components in {} (compile {:.1}s, componentize {:.2}s)",
        outputs.len(),
        out_dir.display(),
        compile_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(outputs)
}

fn make_component(core: &Path, out: &Path) -> Result<()> {
    let module = fs::read(core).context("reading the core module")?;
    let component = component::componentize(&module)?;
    component::check(&component).context("the component is not a valid botbox plugin")?;
    // The host hot-reloads plugin files: it must never see half a file.
    let tmp = out.with_extension("wasm.tmp");
    fs::write(&tmp, &component).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

fn modified(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("{} was not built", path.display()))
}

/// Whether `out` exists and is newer than every known input.
fn is_fresh(out: &Path, inputs: &[Option<SystemTime>]) -> bool {
    let Ok(out_time) = fs::metadata(out).and_then(|m| m.modified()) else {
        return false;
    };
    inputs.iter().flatten().all(|input| *input <= out_time)
}

/// The workspace's `cdylib` members, from `plugins/Cargo.toml`.
fn discover(workspace: &Path) -> Result<Vec<Plugin>> {
    let manifest = read_toml(&workspace.join("Cargo.toml"))?;
    let members = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("plugins/Cargo.toml has no [workspace] members list")?;
    let mut plugins = Vec::new();
    for member in members {
        let member = member
            .as_str()
            .context("plugins/Cargo.toml: workspace members must be strings")?;
        if member.contains(['*', '?', '[']) {
            bail!("plugins/Cargo.toml: list members by name, not by glob (`{member}`)");
        }
        let path = workspace.join(member).join("Cargo.toml");
        let manifest = read_toml(&path)?;
        let name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{} has no package name", path.display()))?;
        let lib = manifest.get("lib");
        let is_cdylib = lib
            .and_then(|l| l.get("crate-type"))
            .and_then(|t| t.as_array())
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        if !is_cdylib {
            // A helper library shared by plugins, not a plugin.
            continue;
        }
        let lib_name = lib
            .and_then(|l| l.get("name"))
            .and_then(|n| n.as_str())
            .map_or_else(|| name.replace('-', "_"), str::to_owned);
        plugins.push(Plugin {
            name: name.to_owned(),
            lib_name,
        });
    }
    if plugins.is_empty() {
        bail!("plugins/Cargo.toml lists no cdylib crates");
    }
    Ok(plugins)
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse()
        .with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn discovers_the_example_bots() {
        let plugins = discover(&paths::plugins_workspace()).expect("plugins/Cargo.toml reads");
        let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["greeter", "announcer", "commands", "status"]);
        assert!(plugins.iter().all(|p| p.lib_name == p.name));
    }

    #[test]
    fn freshness() {
        let dir = std::env::temp_dir().join(format!("xtask-fresh-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let out = dir.join("out.wasm");
        let now = SystemTime::now();
        assert!(!is_fresh(&out, &[Some(now)]), "a missing output is stale");
        fs::write(&out, b"x").expect("write");
        let written = modified(&out).expect("mtime");
        assert!(is_fresh(
            &out,
            &[Some(written - Duration::from_secs(5)), None]
        ));
        assert!(!is_fresh(&out, &[Some(written + Duration::from_secs(5))]));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
