//! `cargo xtask template-types`: regenerate what the JS, TypeScript and
//! Python templates ship of the `bot` world, from `wit/`, with the pinned
//! tools the template tests use:
//!
//! - `sdk/templates/{js,ts}/types/`: TypeScript declarations
//!   (`jco guest-types`, jco from `plugins/js/node_modules`);
//! - `sdk/templates/python/`: the componentize-py bindings package
//!   (`wit_world/` and its helpers; `componentize-py bindings`, from the
//!   venv `cargo xtask plugins` uses).
//!
//! `botbox new` copies them so editors know the imports before the first
//! build, and each template's `build.sh` regenerates them from the project's
//! `wit/`. Run this after changing `wit/bot.wit`: the template tests
//! (`tests/polyglot_bots.rs`) fail while the shipped copies are stale.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::guests::{self, Lang, cbind, tools};
use crate::{paths, step};

/// The templates that ship TypeScript declarations in `types/`.
const TYPESCRIPT_TEMPLATES: [&str; 2] = ["js", "ts"];

/// What `componentize-py bindings` writes that is a folder of its own, so
/// files of interfaces the WIT no longer has go with it.
const PYTHON_BINDING_DIRS: [&str; 2] = ["wit_world", "componentize_py_async_support"];

/// `cargo xtask template-types`.
pub fn run() -> Result<()> {
    let wit = paths::root().join("wit");
    let templates = paths::root().join("sdk").join("templates");

    let js_project = guests::lang_dir(Lang::Js);
    tools::ensure_componentize_js(&js_project)?;
    let jco = js_project.join("node_modules/.bin/jco");
    if !jco.exists() {
        bail!(
            "{} is missing: is @bytecodealliance/jco in {}?",
            jco.display(),
            js_project.join("package.json").display()
        );
    }
    for lang in TYPESCRIPT_TEMPLATES {
        let out = templates.join(lang).join("types");
        remove_dir(&out)?;
        step::run(
            &format!("jco guest-types (sdk/templates/{lang})"),
            Command::new(&jco)
                .arg("guest-types")
                .arg(&wit)
                .args(["--world-name", cbind::WORLD, "--quiet", "--out-dir"])
                .arg(&out),
        )?;
    }

    let (componentize_py, _) = tools::ensure_componentize_py(&guests::requirements())?;
    let python = templates.join("python");
    for dir in PYTHON_BINDING_DIRS {
        remove_dir(&python.join(dir))?;
    }
    step::run(
        "componentize-py bindings (sdk/templates/python)",
        Command::new(componentize_py)
            .arg("--quiet")
            .arg("--wit-path")
            .arg(&wit)
            .args(["--world", cbind::WORLD, "bindings"])
            .arg(&python),
    )?;
    eprintln!("==> regenerated the template types from {}", wit.display());
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}
