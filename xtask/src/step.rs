//! Running external commands as named steps, with errors that say which step
//! failed and how to repeat it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Variables that would point a nested cargo at another compiler, target,
/// target dir or set of flags. Native plugin and SDK steps must not inherit
/// them from the outer `cargo xtask`, nor from a guest build's setup.
const COMPILER_ENV: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_BOOTSTRAP",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
];

/// Remove every variable in [`COMPILER_ENV`] from a command.
pub fn isolate(cmd: &mut Command) -> &mut Command {
    for var in COMPILER_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// `cargo` as the outer `cargo xtask` found it, so nested steps use the same
/// toolchain the user chose (`cargo +nightly xtask test` stays on nightly).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A cargo command for a guest-side workspace built natively (the plugins'
/// and SDK's unit tests, fmt and clippy): the user's cargo, a clean compiler
/// environment and the guest target dir.
pub fn native_guest_cargo(dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = cargo();
    isolate(&mut cmd);
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target_dir);
    cmd
}

/// Run a command to completion with inherited output; fail naming the step.
pub fn run(step: &str, cmd: &mut Command) -> Result<Duration> {
    eprintln!("==> {step}: {}", describe(cmd));
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::inherit())
        .status()
        .with_context(|| format!("step `{step}`: could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!(
            "step `{step}` failed ({status})\n  command: {}\n  in: {}",
            describe(cmd),
            cmd.get_current_dir()
                .map_or_else(|| ".".into(), |d| d.display().to_string())
        );
    }
    Ok(started.elapsed())
}

/// Run a command and capture its stdout, or `None` if it cannot start or
/// fails: used to probe for tools.
pub fn probe(program: impl AsRef<OsStr>, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
