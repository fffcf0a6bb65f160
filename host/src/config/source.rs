//! Where a plugin's component comes from (`plugins.NAME.path`), the digest
//! it is pinned to (`plugins.NAME.sha256`) and how its registry is reached
//! (`[plugins.NAME.registry]`).
//!
//! ```toml
//! [plugins.greeter]
//! path = "oci://registry.example.com/bots/greeter:1.2"   # or a file, or …@sha256:…
//! sha256 = "3b1f…"                  # of the component itself; required for oci://
//! [plugins.greeter.registry]
//! username = "ci"
//! password = { env = "REGISTRY_TOKEN" }
//! max_blob_mb = 64                 # the largest component it will download
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use super::Secret;

/// The scheme of a registry reference in `plugins.NAME.path`.
pub const OCI_SCHEME: &str = "oci://";

/// The default of `registry.max_blob_mb`: far above any plugin (the example
/// bots are under 10 MiB), far below what would hurt the host's disk.
pub const DEFAULT_MAX_BLOB_MB: u64 = 64;

/// The largest `registry.max_blob_mb` accepted.
pub const MAX_MAX_BLOB_MB: u64 = 4096;

/// A SHA-256 digest, written `sha256:<64 hex>` (the OCI form) and read with
/// or without the `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        use sha2::Digest as _;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<hex>` or bare `<hex>` (64 hex digits, any case).
    pub fn parse(text: &str) -> Result<Sha256Digest, String> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let mut out = [0u8; 32];
        match hex::decode_to_slice(hex_part, &mut out) {
            Ok(()) => Ok(Sha256Digest(out)),
            Err(_) => Err(
                "must be a SHA-256 digest: 64 hex digits, optionally after `sha256:` \
                 (print one with `sha256sum plugin.wasm`)"
                    .into(),
            ),
        }
    }

    /// The 64 lowercase hex digits, without the prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A component in an OCI registry: `oci://REGISTRY/REPOSITORY:TAG` or
/// `oci://REGISTRY/REPOSITORY@sha256:…` (a manifest digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// `host[:port]`.
    pub registry: String,
    /// `name/space/repo`, lowercase.
    pub repository: String,
    /// The tag or the manifest digest.
    pub version: OciVersion,
}

/// The part of an [`OciReference`] after the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciVersion {
    /// A tag, which the registry may move.
    Tag(String),
    /// A manifest digest, which it cannot.
    Digest(Sha256Digest),
}

impl OciReference {
    /// Parses `oci://REGISTRY/REPOSITORY:TAG` or `…@sha256:HEX`.
    pub fn parse(text: &str) -> Result<OciReference, String> {
        let rest = text.strip_prefix(OCI_SCHEME).ok_or_else(|| {
            format!(
                "must start with {OCI_SCHEME}, as in oci://registry.example.com/bots/greeter:1.0"
            )
        })?;
        let (registry, path) = rest.split_once('/').ok_or_else(|| {
            "names no repository; write oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:…".to_string()
        })?;
        let registry_ok = !registry.is_empty()
            && registry.len() <= 255
            && registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !registry_ok {
            return Err(
                "has a registry that is not a host name with an optional :port".to_string(),
            );
        }
        let (repository, version) = if let Some((repo, digest)) = path.split_once('@') {
            let digest = digest
                .strip_prefix("sha256:")
                .ok_or("names a digest that is not sha256:…")
                .and_then(|_| {
                    Sha256Digest::parse(digest).map_err(|_| "has a malformed sha256 digest")
                })
                .map_err(str::to_string)?;
            (repo, OciVersion::Digest(digest))
        } else {
            // The tag is after the last ':' of the path (a registry port is
            // before the first '/').
            match path.rsplit_once(':') {
                Some((repo, tag)) => {
                    let tag_ok = !tag.is_empty()
                        && tag.len() <= 128
                        && !tag.starts_with(['.', '-'])
                        && tag
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                    if !tag_ok {
                        return Err(
                            "has a tag that is not 1 to 128 of letters, digits, '.', '_' or '-'"
                                .into(),
                        );
                    }
                    (repo, OciVersion::Tag(tag.to_string()))
                }
                None => {
                    return Err(
                        "names neither a tag nor a digest; add :TAG or @sha256:… (there is no implicit :latest)"
                            .into(),
                    );
                }
            }
        };
        let repo_ok = !repository.is_empty()
            && repository.len() <= 255
            && !repository.starts_with('/')
            && !repository.ends_with('/')
            && !repository.contains("//")
            && repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b));
        if !repo_ok {
            return Err(
                "has a repository that is not lowercase letters, digits, '.', '_', '-' and '/'"
                    .into(),
            );
        }
        Ok(OciReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            version,
        })
    }

    /// Whether the registry is this machine (127.0.0.0/8, ::1, `localhost`):
    /// the only registries spoken to over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host.eq_ignore_ascii_case("localhost"),
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{OCI_SCHEME}{}/{}", self.registry, self.repository)?;
        match &self.version {
            OciVersion::Tag(tag) => write!(f, ":{tag}"),
            OciVersion::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A file, resolved against the config's folder.
    File(PathBuf),
    /// A registry; the pulled component is kept in the pull cache.
    Oci(OciReference),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::File(path) => write!(f, "{}", path.display()),
            PluginSource::Oci(reference) => write!(f, "{reference}"),
        }
    }
}

/// `[plugins.NAME.registry]`: how the registry of an `oci://` plugin is
/// reached. Plain HTTP is used for loopback registries only.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// `username`, with `password`: HTTP Basic, or the registry's token
    /// exchange. Anonymous when absent.
    pub username: Option<String>,
    /// `password`: a secret reference, never inline.
    pub password: Option<Secret>,
    /// `max_blob_mb`, in bytes: the largest component (and config blob)
    /// downloaded; a manifest announcing more is refused before any of it
    /// is fetched, and a download is cut off past it.
    pub max_blob_bytes: u64,
}

impl Default for RegistryAccess {
    fn default() -> Self {
        RegistryAccess {
            username: None,
            password: None,
            max_blob_bytes: DEFAULT_MAX_BLOB_MB << 20,
        }
    }
}

/// Where the pull cache keeps the component of this digest:
/// `STORAGE_DIR/components/sha256/HEX.wasm`.
pub fn cached_component(storage_dir: &Path, digest: &Sha256Digest) -> PathBuf {
    storage_dir
        .join("components")
        .join("sha256")
        .join(format!("{}.wasm", digest.hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3b1f5c6e0d4a2b8f9e7c1d0a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8";

    #[test]
    fn references_with_a_tag_or_a_digest_parse() {
        let r = OciReference::parse("oci://127.0.0.1:5000/bots/greeter:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "bots/greeter");
        assert_eq!(r.version, OciVersion::Tag("1.0".into()));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/bots/greeter:1.0");

        let text = format!("oci://ghcr.io/acme/greeter@sha256:{HEX}");
        let r = OciReference::parse(&text).unwrap();
        assert!(matches!(r.version, OciVersion::Digest(_)));
        assert!(!r.is_loopback());
        assert_eq!(r.to_string(), text);
        assert!(
            OciReference::parse("oci://[::1]:5000/a:b")
                .unwrap()
                .is_loopback()
        );
        assert!(
            OciReference::parse("oci://localhost/a:b")
                .unwrap()
                .is_loopback()
        );
        assert!(
            !OciReference::parse("oci://127.example.com/a:b")
                .unwrap()
                .is_loopback()
        );
    }

    #[test]
    fn malformed_references_are_refused_with_the_rule() {
        for (text, says) in [
            ("https://x/y:1", "must start with oci://"),
            ("oci://registry", "no repository"),
            ("oci://r/bots/greeter", "neither a tag nor a digest"),
            ("oci://r/Bots:1", "lowercase"),
            ("oci://r/a:b c", "tag"),
            ("oci://r/a@md5:00", "not sha256"),
            ("oci://r/a@sha256:xyz", "malformed"),
        ] {
            let err = OciReference::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn digests_read_with_or_without_the_prefix() {
        let a = Sha256Digest::parse(HEX).unwrap();
        let b = Sha256Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), format!("sha256:{HEX}"));
        assert!(Sha256Digest::parse("abc").is_err());
        assert_eq!(
            Sha256Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
