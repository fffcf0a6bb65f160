//! Where things are. Everything is found from the xtask's own location, so
//! `cargo xtask` works from any directory inside the repository.

use std::path::{Path, PathBuf};

/// The repository root (the host's workspace).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// The guest plugins' own workspace.
pub fn plugins_workspace() -> PathBuf {
    root().join("plugins")
}

/// The guest builds' target dir: never the host's, because the guests may be
/// built by a different `rustc`.
pub fn guest_target_dir() -> PathBuf {
    plugins_workspace().join("target")
}

/// The Rust SDK crate.
pub fn rust_sdk() -> PathBuf {
    root().join("sdk").join("rust")
}

/// The host workspace's target dir: `CARGO_TARGET_DIR` when set (relative to
/// the root, as cargo reads it), `target/` otherwise.
pub fn host_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// Where finished plugin components go: `<host target dir>/plugins/`.
pub fn components_dir() -> PathBuf {
    host_target_dir().join("plugins")
}
