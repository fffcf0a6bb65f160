//! `cargo xtask setup`: find (or install) a Rust toolchain that builds
//! `wasm32-unknown-unknown`, and the tools for the JS, Python and C guests
//! (`guests::tools`), the PostgreSQL server the shared-backend tests run,
//! the OCI registry the plugin distribution tests push to, and the headless
//! Chromium the web console tests drive.
//!
//! Two routes, tried in this order:
//! 1. rustup with the target installed: the ordinary route on a developer
//!    machine (`rustup target add wasm32-unknown-unknown`).
//! 2. Debian's `rustc-web` with its library sources, building the standard
//!    library for the target with `-Zbuild-std`. This exists for machines
//!    where rustup cannot download targets; see `../shared/toolchains.md`.
//!
//! When neither exists and we are root on a system with apt, `setup` installs
//! route 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

use crate::guests::{self, Lang, tools};
use crate::step;

/// The guest target. Plugins import nothing but the botbox interfaces, so
/// they need no WASI: the bare target gives the smallest modules.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages for route 2. `lld-22` because `/usr/bin/rust-lld` points
/// at it and `rust-web-llvm` does not pull it in; `wasi-libc` only matters for
/// WASI targets but keeps the install identical to the documented recipe.
const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
    "wasi-libc",
];

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

/// A way to build the guest workspace for [`TARGET`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestToolchain {
    /// The user's rustup toolchain has the target's standard library.
    Rustup,
    /// Debian's rustc-web: builds the standard library from the sources at
    /// `sysroot/lib/rustlib/src/rust`.
    DebianBuildStd,
}

impl GuestToolchain {
    /// Find a usable toolchain without installing anything.
    pub fn detect() -> Option<Self> {
        if rustup_has_target() {
            Some(Self::Rustup)
        } else if debian_toolchain_complete() {
            Some(Self::DebianBuildStd)
        } else {
            None
        }
    }

    /// A `cargo build --release --target wasm32-unknown-unknown` command for
    /// the workspace in `dir`, with its own environment and `target_dir`.
    pub fn build_command(&self, dir: &Path, target_dir: &Path) -> Command {
        let mut cmd = match self {
            Self::Rustup => step::cargo(),
            Self::DebianBuildStd => Command::new(DEBIAN_CARGO),
        };
        // Never inherit the host build's compiler, flags or target dir.
        step::isolate(&mut cmd);
        cmd.current_dir(dir)
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["build", "--release", "--target", TARGET]);
        if *self == Self::DebianBuildStd {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            cmd
                // Without RUSTC, /usr/bin/cargo would pick rustup's rustc from
                // PATH, which cannot compile the 1.96 library sources.
                .env("RUSTC", DEBIAN_RUSTC)
                // /usr/bin first so build scripts and rust-lld resolve to
                // Debian's tools too.
                .env(
                    "PATH",
                    std::env::join_paths(dirs).unwrap_or_else(|_| path.clone()),
                )
                // build-std is unstable; rustc-web is a stable compiler.
                .env("RUSTC_BOOTSTRAP", "1")
                // panic_abort matches the release profile's `panic = "abort"`.
                .arg("-Zbuild-std=std,panic_abort");
        }
        cmd
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Rustup => "rustup toolchain with the wasm32-unknown-unknown target",
            Self::DebianBuildStd => "Debian rustc-web with -Zbuild-std (no rustup target needed)",
        }
    }
}

/// The Debian package with the PostgreSQL server that the shared-backend
/// tests (`tests/scale_out.rs`) and the delivery benchmark start on loopback.
const POSTGRES_PACKAGES: &[&str] = &["postgresql"];

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The PostgreSQL server binaries, installed from Debian where missing.
pub fn ensure_postgres() -> Result<PathBuf> {
    if let Some(bin) = postgres_bin() {
        return Ok(bin);
    }
    if can_apt_install() {
        eprintln!(
            "no PostgreSQL server found; installing Debian's postgresql for the shared-backend tests"
        );
        apt_install(POSTGRES_PACKAGES)?;
        if let Some(bin) = postgres_bin() {
            return Ok(bin);
        }
    }
    bail!(
        "the shared-backend tests need a PostgreSQL server (initdb, pg_ctl under /usr/lib/postgresql/*/bin).\n\
         On Debian/Ubuntu: sudo apt-get install -y --no-install-recommends {} \
         (or run `cargo xtask setup` as root)",
        POSTGRES_PACKAGES.join(" ")
    )
}

/// Debian's `docker-registry`: the CNCF Distribution registry server
/// (`registry:2`), which `tests/oci.rs` starts on a loopback port.
const REGISTRY_PACKAGES: &[&str] = &["docker-registry"];

/// The registry server binary the package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The OCI registry server, installed from Debian where missing.
pub fn ensure_registry() -> Result<PathBuf> {
    let bin = PathBuf::from(REGISTRY_BIN);
    if bin.is_file() {
        return Ok(bin);
    }
    if can_apt_install() {
        eprintln!(
            "no OCI registry found; installing Debian's docker-registry for the plugin distribution tests"
        );
        apt_install(REGISTRY_PACKAGES)?;
        if bin.is_file() {
            return Ok(bin);
        }
    }
    bail!(
        "the plugin distribution tests (tests/oci.rs) need an OCI registry at {REGISTRY_BIN}.\n\
         On Debian/Ubuntu: sudo apt-get install -y --no-install-recommends {} \
         (or run `cargo xtask setup` as root)",
        REGISTRY_PACKAGES.join(" ")
    )
}

/// Debian's Chromium and its WebDriver server: `tests/console.rs` drives
/// the web console in a headless browser through chromedriver.
const BROWSER_PACKAGES: &[&str] = &["chromium", "chromium-driver"];

/// The browser and the driver the packages install.
pub const BROWSER_BINS: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromedriver"];

/// Chromium and chromedriver, installed from Debian where missing.
pub fn ensure_browser() -> Result<()> {
    let present = || BROWSER_BINS.iter().all(|b| Path::new(b).is_file());
    if present() {
        return Ok(());
    }
    if can_apt_install() {
        eprintln!(
            "no Chromium or chromedriver found; installing Debian's chromium and chromium-driver for the web console tests"
        );
        apt_install(BROWSER_PACKAGES)?;
        if present() {
            return Ok(());
        }
    }
    bail!(
        "the web console tests (tests/console.rs) need {} and {}.\n\
         On Debian/Ubuntu: sudo apt-get install -y --no-install-recommends {} \
         (or run `cargo xtask setup` as root)",
        BROWSER_BINS[0],
        BROWSER_BINS[1],
        BROWSER_PACKAGES.join(" ")
    )
}

/// `cargo xtask setup`: every guest toolchain, the PostgreSQL server,
/// the OCI registry and the browser, installed where missing.
pub fn run() -> Result<()> {
    let toolchain = ensure()?;
    eprintln!("Rust guests:   {}", toolchain.describe());
    let clang = tools::ensure_clang()?;
    eprintln!("C guests:      {}", clang.describe());
    let (componentize_js, _) = tools::ensure_componentize_js(&guests::lang_dir(Lang::Js))?;
    eprintln!("JS guests:     {}", componentize_js.display());
    let requirements = guests::lang_dir(Lang::Python).join("requirements.txt");
    let (componentize_py, _) = tools::ensure_componentize_py(&requirements)?;
    eprintln!("Python guests: {}", componentize_py.display());
    let postgres = ensure_postgres()?;
    eprintln!("PostgreSQL:    {}", postgres.display());
    let registry = ensure_registry()?;
    eprintln!("OCI registry:  {}", registry.display());
    ensure_browser()?;
    eprintln!("Browser:       {} {}", BROWSER_BINS[0], BROWSER_BINS[1]);
    Ok(())
}

/// Find a guest toolchain, installing Debian's when we can.
pub fn ensure() -> Result<GuestToolchain> {
    if let Some(toolchain) = GuestToolchain::detect() {
        return Ok(toolchain);
    }
    if can_apt_install() {
        eprintln!(
            "no Rust toolchain for {TARGET} found; installing Debian's rustc-web (see sdk/rust/README.md)"
        );
        apt_install(DEBIAN_PACKAGES)?;
        if let Some(toolchain) = GuestToolchain::detect() {
            return Ok(toolchain);
        }
        bail!(
            "installed {} but still found no usable toolchain: {}",
            DEBIAN_PACKAGES.join(" "),
            debian_missing().join("; ")
        );
    }
    bail!(
        "no Rust toolchain can build {TARGET}.\n\
         Do one of these, then run the command again:\n\
         - with rustup:          rustup target add {TARGET}\n\
         - on Debian/Ubuntu:     sudo apt-get install -y --no-install-recommends {}\n\
         \x20                      (or run `cargo xtask setup` as root)\n\
         Debian toolchain check: {}",
        DEBIAN_PACKAGES.join(" "),
        debian_missing().join("; ")
    )
}

fn rustup_has_target() -> bool {
    step::probe("rustup", &["target", "list", "--installed"])
        .is_some_and(|out| out.lines().any(|line| line.trim() == TARGET))
}

fn debian_toolchain_complete() -> bool {
    debian_missing().is_empty()
}

/// What route 2 lacks, in words; empty when it is complete.
fn debian_missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(DEBIAN_CARGO).is_file() {
        missing.push(format!("{DEBIAN_CARGO} is missing (package cargo-web)"));
    }
    let Some(sysroot) = step::probe(DEBIAN_RUSTC, &["--print", "sysroot"]) else {
        missing.push(format!(
            "{DEBIAN_RUSTC} is missing or does not run (package rustc-web)"
        ));
        return missing;
    };
    let library = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/std");
    if !library.is_dir() {
        missing.push(format!(
            "{} is missing (package rust-web-src)",
            library.display()
        ));
    }
    // rustc links wasm32 with `rust-lld`, from its sysroot or PATH.
    // `exists` follows symlinks: a /usr/bin/rust-lld left dangling because
    // lld-22 is missing counts as missing.
    let in_sysroot = std::fs::read_dir(Path::new(sysroot.trim()).join("lib/rustlib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| entry.path().join("bin/rust-lld").exists());
    if !in_sysroot && !Path::new("/usr/bin/rust-lld").exists() {
        missing.push("rust-lld is missing (packages rust-web-llvm and lld-22)".to_owned());
    }
    missing
}

/// Whether we may install Debian packages: root on a system with apt.
pub fn can_apt_install() -> bool {
    let is_root = step::probe("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    is_root && step::probe("apt-get", &["--version"]).is_some()
}

/// `apt-get install` the packages, after one `apt-get update` per run.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::SeqCst) {
        step::run("apt-get update", Command::new("apt-get").arg("update"))?;
    }
    step::run(
        "apt-get install",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages),
    )?;
    Ok(())
}
