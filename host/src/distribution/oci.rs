//! Pushing and pulling components in the layout `wkg` (Bytecode Alliance
//! wasm-pkg-tools, through its `oci-wasm` crate) uses: the CNCF TAG Runtime
//! "Wasm OCI Artifact" format
//! (<https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/>).
//!
//! - the manifest is an OCI image manifest
//!   (`application/vnd.oci.image.manifest.v1+json`);
//! - its config blob is `application/vnd.wasm.config.v0+json`: `created`,
//!   `architecture = "wasm"`, `os = "wasip2"` for a component, the
//!   `layerDigests`, and `component` with its `imports` and `exports`;
//! - its one layer is the component itself, `application/wasm`.
//!
//! These are the constants of `oci-wasm` 0.4 (`WASM_MANIFEST_MEDIA_TYPE`,
//! `WASM_MANIFEST_CONFIG_MEDIA_TYPE`, `WASM_LAYER_MEDIA_TYPE`, `COMPONENT_OS`,
//! `WASM_ARCHITECTURE`; github.com/bytecodealliance/rust-oci-wasm,
//! `src/lib.rs` and `src/config.rs`). That crate is not used itself: its pull
//! reads whole layers into memory, which the size cap here must not do, and
//! it brings a second copy of the wasm-tools crates.
//!
//! The registry is hostile input: a manifest announcing a component over
//! the cap is refused before anything is downloaded, the download is cut
//! off at the announced size (and the cap), and the bytes are hashed as they
//! arrive and only renamed into place when their digest is the expected one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::config::{OciReference, OciVersion, RegistryAccess, Sha256Digest};
use crate::sanitize;

/// The manifest's media type: a plain OCI image manifest.
pub const WASM_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config blob's media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer's media type.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// `architecture` in the config.
pub const WASM_ARCHITECTURE: &str = "wasm";
/// `os` in the config, for a component (a core module would be `wasip1`).
pub const COMPONENT_OS: &str = "wasip2";

/// How long to wait for a registry to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registry may leave a request without a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a push or pull did not happen. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A registry source without `sha256`.
    #[error("{reference} has no sha256 pin; add plugins.NAME.sha256")]
    Unpinned {
        /// The reference.
        reference: String,
    },
    /// The registry was unreachable, refused, or answered nonsense.
    #[error(
        "registry {reference}: {reason}; check that the registry is up and the reference and \
         credentials are right"
    )]
    Registry {
        /// The reference.
        reference: String,
        /// The client's error, sanitized.
        reason: String,
    },
    /// The manifest is not a Wasm component artifact.
    #[error(
        "{reference} is not a Wasm component in the wkg layout ({reason}); push it with \
         `botbox plugin push` or `wkg oci push`"
    )]
    NotAComponent {
        /// The reference.
        reference: String,
        /// What was found instead.
        reason: String,
    },
    /// The component is larger than the cap (as announced or as sent).
    #[error(
        "{reference}: the component is {size} bytes, over the cap of {cap} bytes; refused \
         without downloading it (raise registry.max_blob_mb if it is really this large)"
    )]
    TooLarge {
        /// The reference.
        reference: String,
        /// The size announced, or the bytes received when the registry sent
        /// more than it announced.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The registry sent more bytes than its manifest announced.
    #[error(
        "{reference}: the registry sent more than the {announced} bytes its manifest announced; \
         download cut off"
    )]
    Oversent {
        /// The reference.
        reference: String,
        /// The announced size.
        announced: u64,
    },
    /// The component's digest is not the expected one.
    #[error("{reference} has component digest {found}, expected {expected}")]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// What the pin (or the manifest) says.
        expected: Sha256Digest,
        /// What it is.
        found: Sha256Digest,
    },
    /// A local file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The component's digest (also the `sha256` to pin).
    pub digest: Sha256Digest,
    /// The manifest's digest (for `oci://…@sha256:…`).
    pub manifest_digest: String,
    /// The component's size in bytes.
    pub size: u64,
}

/// What a push stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The component's digest (the `sha256` to pin).
    pub digest: Sha256Digest,
    /// The manifest's digest (for `oci://…@sha256:…`).
    pub manifest_digest: String,
}

/// The `application/vnd.wasm.config.v0+json` config blob, as `oci-wasm`'s
/// `WasmConfig` writes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// When it was pushed (RFC 3339).
    pub created: String,
    /// Who pushed it; botbox leaves it empty.
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for a component.
    pub os: String,
    /// The layers' digests, in manifest order.
    pub layer_digests: Vec<String>,
    /// The component's world, by its imports and exports.
    pub component: Option<WasmComponentInfo>,
}

/// `component` in [`WasmConfig`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmComponentInfo {
    /// The component's exports, such as `botbox:bot/handler@0.1.0`.
    pub exports: Vec<String>,
    /// The component's imports.
    pub imports: Vec<String>,
    /// The world it targets, when known.
    pub target: Option<String>,
}

/// One registry repository, reached with the plugin's access settings.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    reference: OciReference,
    max_blob_bytes: u64,
}

impl Registry {
    /// A client for `reference`: HTTPS, or plain HTTP when the registry is
    /// loopback (nothing crosses a network there).
    pub fn new(reference: &OciReference, access: &RegistryAccess) -> Registry {
        let protocol = if reference.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        });
        let auth = match (&access.username, &access.password) {
            (Some(user), Some(password)) => {
                // The client needs the password as a String; it lives only
                // inside the client's request builder from here on.
                RegistryAuth::Basic(user.clone(), password.expose().to_string())
            }
            _ => RegistryAuth::Anonymous,
        };
        Registry {
            client,
            auth,
            reference: reference.clone(),
            max_blob_bytes: access.max_blob_bytes,
        }
    }

    fn oci_reference(&self) -> Reference {
        let r = &self.reference;
        match &r.version {
            OciVersion::Tag(tag) => {
                Reference::with_tag(r.registry.clone(), r.repository.clone(), tag.clone())
            }
            OciVersion::Digest(d) => {
                Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string())
            }
        }
    }

    fn registry_error(&self, e: impl std::fmt::Display) -> FetchError {
        FetchError::Registry {
            reference: self.reference.to_string(),
            reason: sanitize::for_log(&e.to_string(), 500),
        }
    }

    /// The manifest and the component layer it names, checked against the
    /// wkg layout, the cap and `expected`, before any of the layer is read.
    pub async fn component_manifest(
        &self,
        expected: Option<Sha256Digest>,
    ) -> Result<(OciImageManifest, OciDescriptor, String), FetchError> {
        let reference = self.oci_reference();
        let (manifest, manifest_digest) = self
            .client
            .pull_manifest(&reference, &self.auth)
            .await
            .map_err(|e| self.registry_error(e))?;
        let not_a_component = |reason: String| FetchError::NotAComponent {
            reference: self.reference.to_string(),
            reason,
        };
        let manifest = match manifest {
            OciManifest::Image(m) => m,
            OciManifest::ImageIndex(_) => {
                return Err(not_a_component(
                    "it is an image index, not one image manifest".into(),
                ));
            }
        };
        if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(not_a_component(format!(
                "config media type `{}`, not `{WASM_CONFIG_MEDIA_TYPE}`",
                sanitize::for_log(&manifest.config.media_type, 100)
            )));
        }
        let mut wasm_layers = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE);
        let layer = match (wasm_layers.next(), wasm_layers.next()) {
            (Some(layer), None) => layer.clone(),
            (None, _) => {
                return Err(not_a_component(format!(
                    "no `{WASM_LAYER_MEDIA_TYPE}` layer"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(not_a_component(format!(
                    "more than one `{WASM_LAYER_MEDIA_TYPE}` layer"
                )));
            }
        };
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > self.max_blob_bytes {
            return Err(FetchError::TooLarge {
                reference: self.reference.to_string(),
                size,
                cap: self.max_blob_bytes,
            });
        }
        let announced = Sha256Digest::parse(
            layer
                .digest
                .strip_prefix("sha256:")
                .ok_or_else(|| not_a_component("its layer digest is not sha256".into()))?,
        )
        .map_err(|_| not_a_component("its layer digest is malformed".into()))?;
        if let Some(expected) = expected
            && expected != announced
        {
            return Err(FetchError::DigestMismatch {
                reference: self.reference.to_string(),
                expected,
                found: announced,
            });
        }
        Ok((manifest, layer, manifest_digest))
    }

    /// Pulls the component into `dest` (atomically: a partial file next to
    /// it, renamed when complete and verified).
    pub async fn pull(
        &self,
        expected: Option<Sha256Digest>,
        dest: &Path,
    ) -> Result<Pulled, FetchError> {
        let (_manifest, layer, manifest_digest) = self.component_manifest(expected).await?;
        let announced_digest =
            Sha256Digest::parse(&layer.digest).map_err(|_| FetchError::NotAComponent {
                reference: self.reference.to_string(),
                reason: "its layer digest is malformed".into(),
            })?;
        let announced = u64::try_from(layer.size).unwrap_or(u64::MAX);
        let io = |path: &Path, e: std::io::Error| FetchError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let dir = dest.parent().unwrap_or_else(|| Path::new("."));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io(dir, e))?;
        let partial = partial_path(dest);
        let result = self
            .download(&layer, announced, &partial, announced_digest)
            .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| io(dest, e))?;
        Ok(Pulled {
            digest: announced_digest,
            manifest_digest,
            size: announced,
        })
    }

    async fn download(
        &self,
        layer: &OciDescriptor,
        announced: u64,
        partial: &Path,
        expected: Sha256Digest,
    ) -> Result<(), FetchError> {
        let mut stream = self
            .client
            .pull_blob_stream(&self.oci_reference(), layer)
            .await
            .map_err(|e| self.registry_error(e))?;
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(|e| FetchError::Io {
                path: partial.display().to_string(),
                reason: e.to_string(),
            })?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.registry_error(e))?;
            received = received.saturating_add(chunk.len() as u64);
            // The manifest's size was checked against the cap; a registry
            // that sends more than it announced is cut off here, so neither
            // the disk nor the memory sees more than min(announced, cap).
            if received > announced {
                return Err(FetchError::Oversent {
                    reference: self.reference.to_string(),
                    announced,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| FetchError::Io {
                path: partial.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        file.sync_all().await.map_err(|e| FetchError::Io {
            path: partial.display().to_string(),
            reason: e.to_string(),
        })?;
        let found = Sha256Digest(hasher.finalize().into());
        if found != expected {
            return Err(FetchError::DigestMismatch {
                reference: self.reference.to_string(),
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Pushes a component in the wkg layout and tags it.
    pub async fn push(&self, component: Vec<u8>) -> Result<Pushed, FetchError> {
        let OciVersion::Tag(_) = &self.reference.version else {
            return Err(FetchError::Registry {
                reference: self.reference.to_string(),
                reason: "a push needs a tag (oci://REGISTRY/REPOSITORY:TAG), not a digest".into(),
            });
        };
        let digest = Sha256Digest::of(&component);
        let (imports, exports) =
            world_of(&component).map_err(|reason| FetchError::NotAComponent {
                reference: self.reference.to_string(),
                reason,
            })?;
        let config = WasmConfig {
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            author: None,
            architecture: WASM_ARCHITECTURE.into(),
            os: COMPONENT_OS.into(),
            layer_digests: vec![digest.to_string()],
            component: Some(WasmComponentInfo {
                exports,
                imports,
                target: None,
            }),
        };
        let config = Config {
            data: serde_json::to_vec(&config).map_err(|e| self.registry_error(e))?,
            media_type: WASM_CONFIG_MEDIA_TYPE.into(),
            annotations: None,
        };
        let layers = [ImageLayer {
            data: component,
            media_type: WASM_LAYER_MEDIA_TYPE.into(),
            annotations: None,
        }];
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(WASM_MANIFEST_MEDIA_TYPE.into());
        let reference = self.oci_reference();
        self.client
            .push(&reference, &layers, config, &self.auth, Some(manifest))
            .await
            .map_err(|e| self.registry_error(e))?;
        let manifest_digest = self
            .client
            .fetch_manifest_digest(&reference, &self.auth)
            .await
            .map_err(|e| self.registry_error(e))?;
        Ok(Pushed {
            digest,
            manifest_digest,
        })
    }
}

/// `FILE.partial-PID-N` next to `dest`: two pulls of one digest (two hosts
/// on one state dir) never write the same partial file.
fn partial_path(dest: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

/// The names of a component's top-level imports and exports (such as
/// `botbox:bot/handler@0.1.0`), for the config blob's `component`.
pub fn world_of(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components have their own imports and exports;
    // only the outermost component's are its world.
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a WebAssembly file: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 {
                    is_component = encoding == Encoding::Component;
                    if !is_component {
                        return Err("a core module, not a component".into());
                    }
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(|e| format!("malformed import: {e}"))?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(|e| format!("malformed export: {e}"))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if !is_component {
        return Err("empty file".into());
    }
    Ok((imports, exports))
}
