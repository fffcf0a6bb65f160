//! `botbox plugin push` and `botbox plugin pull`: a component to and from
//! an OCI registry, in the layout `wkg oci push` / `wkg oci pull` use.
//!
//! Credentials come from `BOTBOX_REGISTRY_USERNAME` and
//! `BOTBOX_REGISTRY_PASSWORD` (never from an argument, which `ps` would show);
//! without them the registry is used anonymously.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ExitCode;
use crate::config::{
    DEFAULT_MAX_BLOB_MB, OciReference, OciVersion, RegistryAccess, Secret, Sha256Digest,
};
use crate::distribution::Registry;
use crate::sanitize;

/// The variable holding the registry user name.
pub const USERNAME_VAR: &str = "BOTBOX_REGISTRY_USERNAME";
/// The variable holding the registry password or token.
pub const PASSWORD_VAR: &str = "BOTBOX_REGISTRY_PASSWORD";

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Push a component to a registry tag; prints the digests to pin.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where: oci://REGISTRY/REPOSITORY:TAG.
        reference: String,
    },
    /// Pull a component from a registry into a file.
    Pull {
        /// oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:….
        reference: String,
        /// The file to write (default: the repository's last part + .wasm).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Refuse a component whose digest is not this one.
        #[arg(long)]
        sha256: Option<String>,
        /// The largest component to download, in MiB.
        #[arg(long, default_value_t = DEFAULT_MAX_BLOB_MB)]
        max_blob_mb: u64,
    },
}

fn access(max_blob_mb: u64) -> anyhow::Result<RegistryAccess> {
    let username = std::env::var(USERNAME_VAR).ok().filter(|u| !u.is_empty());
    let password = std::env::var(PASSWORD_VAR)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    if username.is_some() != password.is_some() {
        anyhow::bail!("set both {USERNAME_VAR} and {PASSWORD_VAR}, or neither (anonymous)");
    }
    Ok(RegistryAccess {
        username,
        password,
        max_blob_bytes: max_blob_mb.saturating_mul(1 << 20),
    })
}

pub async fn plugin(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Push { file, reference } => {
            let reference = match OciReference::parse(&reference) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: the reference {e}");
                    return Ok(2);
                }
            };
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot read `{}`: {e}", file.display());
                    return Ok(2);
                }
            };
            let registry = Registry::new(&reference, &access(DEFAULT_MAX_BLOB_MB)?);
            match registry.push(bytes).await {
                Ok(pushed) => {
                    // Pinned by manifest digest, the reference cannot move.
                    let by_digest = match Sha256Digest::parse(&pushed.manifest_digest) {
                        Ok(d) => OciReference {
                            version: OciVersion::Digest(d),
                            ..reference.clone()
                        }
                        .to_string(),
                        Err(_) => reference.to_string(),
                    };
                    println!("pushed {reference}");
                    println!("  manifest:  {}", pushed.manifest_digest);
                    println!("  component: {}", pushed.digest);
                    println!("pin it in botbox.toml:");
                    println!("  path = \"{by_digest}\"");
                    println!("  sha256 = \"{}\"", pushed.digest.hex());
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(1)
                }
            }
        }
        PluginCommand::Pull {
            reference,
            out,
            sha256,
            max_blob_mb,
        } => {
            let reference = match OciReference::parse(&reference) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: the reference {e}");
                    return Ok(2);
                }
            };
            let expected = match sha256.as_deref().map(Sha256Digest::parse).transpose() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: --sha256 {e}");
                    return Ok(2);
                }
            };
            let out = out.unwrap_or_else(|| {
                let last = reference.repository.rsplit('/').next().unwrap_or("plugin");
                PathBuf::from(format!("{last}.wasm"))
            });
            let registry = Registry::new(&reference, &access(max_blob_mb)?);
            match registry.pull(expected, &out).await {
                Ok(pulled) => {
                    println!(
                        "pulled {reference} to {}",
                        sanitize::for_log(&out.display().to_string(), 300)
                    );
                    println!("  manifest:  {}", pulled.manifest_digest);
                    println!("  component: {} ({} bytes)", pulled.digest, pulled.size);
                    println!("  sha256 = \"{}\"", pulled.digest.hex());
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(1)
                }
            }
        }
    }
}
