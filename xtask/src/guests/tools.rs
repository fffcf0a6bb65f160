//! The tools that build the JavaScript, Python and C guests, found or
//! installed on demand (recipes in `shared/toolchains.md`):
//!
//! - C: clang with a wasm32-wasi sysroot. Debian's `clang lld wasi-libc
//!   libclang-rt-dev-wasm32` (installed as root when missing), or a wasi-sdk
//!   named by `WASI_SDK_PATH`. The bindings come from the `wit-bindgen-c`
//!   crate in-process ([`super::cbind`]), so no `wit-bindgen` CLI.
//! - JavaScript: node 18+ and npm; `componentize-js` in the project's own
//!   `node_modules` (`plugins/js/node_modules`), pinned by its `package.json`.
//! - Python: python3 with `venv`; `componentize-py` in a venv under
//!   `<target>/guests/python-venv`, pinned by `plugins/python/requirements.txt`.
//!
//! Everything is checked cheaply and installed only when missing or when
//! its pin changed, so the second run costs nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{paths, setup, step};

/// Debian packages for C guests.
pub const C_PACKAGES: &[&str] = &["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];
/// Debian packages for JavaScript guests, installed only when node is missing.
pub const NODE_PACKAGES: &[&str] = &["nodejs", "npm"];
/// Debian packages for Python guests, installed only when python3 lacks venv.
pub const PYTHON_PACKAGES: &[&str] = &["python3", "python3-venv", "python3-pip"];

/// The oldest node componentize-js runs on.
const MIN_NODE_MAJOR: u32 = 18;

/// clang that builds wasm32-wasi reactors.
#[derive(Debug, Clone)]
pub struct Clang {
    program: PathBuf,
    sysroot: Option<PathBuf>,
}

impl Clang {
    /// `$WASI_SDK_PATH/bin/clang` with its sysroot, or `clang` from PATH
    /// with the sysroot it was configured with (Debian's finds wasi-libc).
    fn candidate() -> Clang {
        match std::env::var_os("WASI_SDK_PATH") {
            Some(sdk) if !sdk.is_empty() => {
                let sdk = PathBuf::from(sdk);
                Clang {
                    program: sdk.join("bin").join("clang"),
                    sysroot: Some(sdk.join("share").join("wasi-sysroot")),
                }
            }
            _ => Clang {
                program: "clang".into(),
                sysroot: None,
            },
        }
    }

    /// `clang --target=wasm32-wasi -mexec-model=reactor [--sysroot=…]`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["--target=wasm32-wasi", "-mexec-model=reactor"]);
        if let Some(sysroot) = &self.sysroot {
            cmd.arg(format!("--sysroot={}", sysroot.display()));
        }
        cmd
    }

    /// Compile and link a reactor that uses libc: proves clang, wasm-ld,
    /// wasi-libc and compiler-rt are all there. `Err` is clang's complaint.
    fn works(&self) -> std::result::Result<(), String> {
        let dir = std::env::temp_dir().join(format!("xtask-clang-probe-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let source = dir.join("probe.c");
        let output = dir.join("probe.wasm");
        let result = fs::write(
            &source,
            "#include <stdlib.h>\n#include <string.h>\n\
             __attribute__((export_name(\"probe\"))) int probe(int n) {\n\
             char *p = malloc(n + 1); memset(p, 1, n + 1); int r = p[n]; free(p); return r; }\n",
        )
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let out = self
                .command()
                .args(["-O1", "-o"])
                .arg(&output)
                .arg(&source)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("`{}` does not run: {e}", self.program.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            }
        });
        let _ = fs::remove_dir_all(&dir);
        result
    }

    pub fn describe(&self) -> String {
        match &self.sysroot {
            Some(sysroot) => format!("{} (sysroot {})", self.program.display(), sysroot.display()),
            None => format!("{} with wasi-libc", self.program.display()),
        }
    }
}

/// Find clang for wasm32-wasi, installing Debian's when we are root.
pub fn ensure_clang() -> Result<Clang> {
    let clang = Clang::candidate();
    let first = match clang.works() {
        Ok(()) => return Ok(clang),
        Err(why) => why,
    };
    if clang.sysroot.is_none() && setup::can_apt_install() {
        eprintln!(
            "no clang that builds wasm32-wasi ({}); installing {}",
            first.lines().next().unwrap_or_default(),
            C_PACKAGES.join(" ")
        );
        setup::apt_install(C_PACKAGES)?;
        return match clang.works() {
            Ok(()) => Ok(clang),
            Err(why) => bail!(
                "installed {} but clang still cannot build wasm32-wasi:\n{why}",
                C_PACKAGES.join(" ")
            ),
        };
    }
    bail!(
        "no C compiler for wasm32-wasi:\n{first}\n\
         Do one of these, then run the command again:\n\
         - on Debian/Ubuntu:  sudo apt-get install -y --no-install-recommends {}\n\
         \x20                   (or run `cargo xtask setup` as root)\n\
         - with wasi-sdk:     export WASI_SDK_PATH=/path/to/wasi-sdk",
        C_PACKAGES.join(" ")
    )
}

fn node_major() -> Option<u32> {
    let version = step::probe("node", &["--version"])?;
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn node_missing() -> Option<String> {
    match node_major() {
        None => Some("node is not installed".into()),
        Some(major) if major < MIN_NODE_MAJOR => Some(format!(
            "node {major} is too old; componentize-js needs {MIN_NODE_MAJOR}+"
        )),
        Some(_) if step::probe("npm", &["--version"]).is_none() => {
            Some("npm is not installed".into())
        }
        Some(_) => None,
    }
}

/// Make sure node and npm exist, installing Debian's when we are root.
pub fn ensure_node() -> Result<()> {
    let Some(why) = node_missing() else {
        return Ok(());
    };
    if setup::can_apt_install() {
        eprintln!("{why}; installing {}", NODE_PACKAGES.join(" "));
        setup::apt_install(NODE_PACKAGES)?;
        if let Some(why) = node_missing() {
            bail!("installed {} but {why}", NODE_PACKAGES.join(" "));
        }
        return Ok(());
    }
    bail!(
        "{why}. JavaScript guests need node {MIN_NODE_MAJOR}+ and npm: install them \
         (https://nodejs.org, or `apt-get install nodejs npm`), then run the command again"
    )
}

/// `componentize-js` in `project/node_modules`, installed when
/// `node_modules` is missing or older than `package.json`. Returns the
/// program and the file whose mtime says when it was installed.
///
/// `package.json` pins componentize-js, jco (whose `guest-types` writes the
/// JS and TS templates' declarations) and typescript, and through
/// `overrides` the tools componentize-js runs (jco, wizer, weval) and
/// preview2-shim (0.26.1 preopens no folder, so jco could read no WIT).
/// There is no lock file: npm writes one that leaves out other platforms'
/// optional packages when the registry it reaches lacks them, and `npm ci`
/// then refuses it everywhere. Every pin is an exact version instead.
pub fn ensure_componentize_js(project: &Path) -> Result<(PathBuf, PathBuf)> {
    let bin = project.join("node_modules/.bin/componentize-js");
    // npm rewrites this file on every install.
    let marker = project.join("node_modules/.package-lock.json");
    let inputs = [mtime(&project.join("package.json"))];
    if !(bin.exists() && is_fresh(&marker, &inputs)) {
        ensure_node()?;
        // Into an existing tree, npm applies changed `overrides` only in
        // part: moving preview2-shim from 0.26.1 to 0.25.0 removed the old
        // top-level copy, kept the nested ones, and left componentize-js
        // without the package. With no lock file an install resolves
        // everything anyway, so start from an empty folder.
        let modules = project.join("node_modules");
        if modules.exists() {
            fs::remove_dir_all(&modules)
                .with_context(|| format!("removing the stale {}", modules.display()))?;
        }
        step::run(
            "npm install (componentize-js)",
            Command::new("npm").current_dir(project).args([
                "install",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]),
        )?;
        // The templates' tests also use jco (guest-types) and tsc.
        for tool in ["componentize-js", "jco", "tsc"] {
            let tool_bin = project.join("node_modules/.bin").join(tool);
            if !tool_bin.exists() {
                bail!(
                    "npm install in {} did not install {tool} ({} is missing); \
                     does package.json name @bytecodealliance/componentize-js, \
                     @bytecodealliance/jco and typescript?",
                    project.display(),
                    tool_bin.display()
                );
            }
        }
    }
    Ok((bin, marker))
}

/// The venv that holds componentize-py.
pub fn python_venv() -> PathBuf {
    paths::host_target_dir().join("guests").join("python-venv")
}

fn python_missing() -> Option<String> {
    if step::probe("python3", &["--version"]).is_none() {
        return Some("python3 is not installed".into());
    }
    // Debian splits venv and ensurepip out of python3.
    if step::probe("python3", &["-c", "import venv, ensurepip"]).is_none() {
        return Some("python3 has no venv/ensurepip (Debian: python3-venv)".into());
    }
    None
}

fn ensure_python() -> Result<()> {
    let Some(why) = python_missing() else {
        return Ok(());
    };
    if setup::can_apt_install() {
        eprintln!("{why}; installing {}", PYTHON_PACKAGES.join(" "));
        setup::apt_install(PYTHON_PACKAGES)?;
        if let Some(why) = python_missing() {
            bail!("installed {} but {why}", PYTHON_PACKAGES.join(" "));
        }
        return Ok(());
    }
    bail!("{why}. Python guests need python3 with venv; install it, then run the command again")
}

/// `componentize-py` in [`python_venv`], installed from `requirements` when
/// missing or when the requirements changed since. Returns the program and
/// the file whose mtime says when it was installed.
pub fn ensure_componentize_py(requirements: &Path) -> Result<(PathBuf, PathBuf)> {
    let venv = python_venv();
    let bin = venv.join("bin").join("componentize-py");
    // A copy of the requirements it was installed from.
    let marker = venv.join("installed-requirements.txt");
    let wanted = fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    if bin.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok((bin, marker));
    }
    ensure_python()?;
    let python = venv.join("bin").join("python");
    if !python.exists() {
        step::run(
            "python venv (componentize-py)",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
    }
    step::run(
        "pip install (componentize-py)",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(requirements),
    )?;
    if !bin.exists() {
        bail!(
            "pip installed {} but {} is missing; does it name componentize-py?",
            requirements.display(),
            bin.display()
        );
    }
    fs::write(&marker, &wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok((bin, marker))
}

/// A file's modification time, `None` when it does not exist.
pub fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `out` exists and is at least as new as every input that exists.
pub fn is_fresh(out: &Path, inputs: &[Option<std::time::SystemTime>]) -> bool {
    let Some(out_time) = mtime(out) else {
        return false;
    };
    inputs.iter().flatten().all(|input| *input <= out_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clang_commands_target_wasi_reactors() {
        let clang = Clang {
            program: "/opt/wasi-sdk/bin/clang".into(),
            sysroot: Some("/opt/wasi-sdk/share/wasi-sysroot".into()),
        };
        let line = step::describe(&clang.command());
        assert_eq!(
            line,
            "/opt/wasi-sdk/bin/clang --target=wasm32-wasi -mexec-model=reactor \
             --sysroot=/opt/wasi-sdk/share/wasi-sysroot"
        );
    }

    #[test]
    fn the_venv_lives_in_the_target_dir() {
        assert!(python_venv().starts_with(paths::host_target_dir()));
    }
}
