//! Where a plugin's bytes come from: a file, or an OCI registry through a
//! pull cache on disk, and the digest pin they are checked against.
//!
//! A pinned component is identified by the SHA-256 of its bytes
//! (`plugins.NAME.sha256`), the same digest `sha256sum` prints and the
//! registry uses for the component's layer. A registry source is fetched
//! once per digest into `STORAGE_DIR/components/sha256/HEX.wasm`; from then
//! on the host loads that copy without asking the registry, so a restart or
//! a reload with the same pin works while the registry is down, and a tag
//! that moves on the registry changes nothing until the pin does.
//!
//! Registries are spoken to in the layout `wkg` (Bytecode Alliance
//! wasm-pkg-tools) uses for components, the CNCF TAG Runtime "Wasm OCI
//! Artifact" format: see [`oci`].

pub mod oci;

use std::path::Path;

use crate::config::{PluginConfig, PluginSource, Sha256Digest};
use crate::sanitize;

pub use oci::{FetchError, Pulled, Pushed, Registry};

/// A component's bytes, checked against the plugin's pin.
#[derive(Debug)]
pub struct Component {
    /// The bytes to compile.
    pub bytes: Vec<u8>,
    /// Their SHA-256.
    pub digest: Sha256Digest,
    /// Where they came from this time.
    pub origin: Origin,
}

/// Where a [`Component`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The plugin's file.
    File,
    /// The pull cache: no registry was asked.
    Cache,
    /// The registry, just now (and it is in the pull cache from now on).
    Registry,
}

/// Why a plugin's component could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("plugin `{plugin}`: cannot read `{path}`: {reason}")]
    Read {
        /// The plugin.
        plugin: String,
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The component is not the one the config pins.
    #[error(
        "plugin `{plugin}`: `{source_name}` has digest {found}, but plugins.{plugin}.sha256 pins \
         {pinned}; refusing it. If this build is the one you mean to run, set \
         plugins.{plugin}.sha256 = \"{found_hex}\"; otherwise restore the pinned build",
        found_hex = found.hex()
    )]
    DigestMismatch {
        /// The plugin.
        plugin: String,
        /// The file or registry reference.
        source_name: String,
        /// The digest in the config.
        pinned: Sha256Digest,
        /// The digest of what was found.
        found: Sha256Digest,
    },
    /// The registry refused, was unreachable, or served something else.
    #[error("plugin `{plugin}`: {error}")]
    Registry {
        /// The plugin.
        plugin: String,
        /// What went wrong, naming the reference.
        error: FetchError,
    },
}

/// Reads a plugin's component from its file, or from the pull cache, or
/// pulls it into the cache, and checks it against the pin.
pub async fn fetch(plugin: &str, config: &PluginConfig) -> Result<Component, SourceError> {
    match &config.source {
        PluginSource::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| SourceError::Read {
                plugin: plugin.into(),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let digest = Sha256Digest::of(&bytes);
            if let Some(pinned) = config.sha256
                && pinned != digest
            {
                return Err(SourceError::DigestMismatch {
                    plugin: plugin.into(),
                    source_name: path.display().to_string(),
                    pinned,
                    found: digest,
                });
            }
            Ok(Component {
                bytes,
                digest,
                origin: Origin::File,
            })
        }
        PluginSource::Oci(reference) => {
            // The config refuses oci:// without a pin, so this is a
            // programming error, reported like a config one.
            let Some(pinned) = config.sha256 else {
                return Err(SourceError::Registry {
                    plugin: plugin.into(),
                    error: FetchError::Unpinned {
                        reference: reference.to_string(),
                    },
                });
            };
            let cached = &config.path;
            if let Some(component) = read_cached(cached, pinned).await {
                return Ok(component);
            }
            let registry = Registry::new(reference, &config.registry);
            match registry.pull(Some(pinned), cached).await {
                Ok(pulled) => {
                    tracing::info!(
                        plugin,
                        reference = %reference,
                        digest = %pulled.digest,
                        bytes = pulled.size,
                        "pulled"
                    );
                    let bytes = tokio::fs::read(cached)
                        .await
                        .map_err(|e| SourceError::Read {
                            plugin: plugin.into(),
                            path: cached.display().to_string(),
                            reason: e.to_string(),
                        })?;
                    Ok(Component {
                        digest: Sha256Digest::of(&bytes),
                        bytes,
                        origin: Origin::Registry,
                    })
                }
                Err(FetchError::DigestMismatch { found, .. }) => Err(SourceError::DigestMismatch {
                    plugin: plugin.into(),
                    source_name: reference.to_string(),
                    pinned,
                    found,
                }),
                Err(error) => Err(SourceError::Registry {
                    plugin: plugin.into(),
                    error,
                }),
            }
        }
    }
}

/// The cached copy of `pinned`, when there is one and it is intact. A copy
/// that is not (a disk error, someone's edit) is removed, to be pulled again.
async fn read_cached(path: &Path, pinned: Sha256Digest) -> Option<Component> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let digest = Sha256Digest::of(&bytes);
    if digest != pinned {
        tracing::warn!(
            path = %sanitize::for_log(&path.display().to_string(), 300),
            found = %digest,
            "the pull cache's copy does not match its digest; removing it and pulling again"
        );
        let _ = tokio::fs::remove_file(path).await;
        return None;
    }
    Some(Component {
        bytes,
        digest,
        origin: Origin::Cache,
    })
}
