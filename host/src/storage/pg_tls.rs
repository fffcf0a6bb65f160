//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert`, over rustls.
//!
//! tokio-postgres reads `sslmode=disable|prefer|require` itself, but not
//! `verify-ca`, `verify-full` or `sslrootcert`, so those are taken out of
//! `storage.postgres_url` here and carried out by the TLS connector
//! (`tokio-postgres-rustls`, which also gives SCRAM its channel binding).
//! As in libpq (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//!
//! | sslmode | TLS | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server offers it | no |
//! | `require` | always | no; against `sslrootcert` when one is given (as `verify-ca`) |
//! | `verify-ca` | always | chains to `sslrootcert` (or the public web roots) |
//! | `verify-full` | always | that, and names the host connected to |

use std::path::PathBuf;
use std::sync::Arc;

use postgres::config::SslMode as WireMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it (the default).
    Prefer,
    /// Always TLS; the certificate is not checked.
    Require,
    /// Always TLS; the certificate chains to a trusted root.
    VerifyCa,
    /// That, and it names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The mode's name in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed `storage.postgres_url`: the client's config, and how to do TLS.
pub struct Target {
    /// The async client's config; `postgres::Config::from` it for the
    /// blocking client.
    pub config: tokio_postgres::Config,
    /// The `sslmode` asked for.
    pub mode: SslMode,
    /// The TLS connector for that mode.
    pub tls: MakeRustlsConnect,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, URL
/// (`postgres://…?sslmode=verify-full&sslrootcert=/etc/ca.pem`) or
/// key=value (`host=db sslmode=require`). Errors never quote the string,
/// which holds the password.
fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => {
                mode = Some(value);
                true
            }
            "sslrootcert" => {
                root = Some(value);
                true
            }
            _ => false,
        }
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, percent_decode(v)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, mode, root))
    } else {
        // key=value form; values with spaces would be quoted, which these
        // two keys' values (a mode, a path) rarely need.
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if take(k.trim(), v.trim_matches('\'').to_string()) => {}
                _ => kept.push(word),
            }
        }
        Ok((kept.join(" "), mode, root))
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` escape in the query string is malformed")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a query parameter is not UTF-8".to_string())
}

/// Parses `storage.postgres_url` and builds its TLS connector.
pub fn target(url: &str) -> Result<Target, String> {
    let (rest, mode, root) = split_tls_params(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!("`storage.postgres_url` is not a PostgreSQL connection string: {e}")
    })?;
    let mode = match mode.as_deref() {
        None => SslMode::Prefer,
        Some(m) => SslMode::parse(m).ok_or_else(|| {
            format!(
                "`storage.postgres_url` has sslmode `{}`; use disable, prefer, require, verify-ca or verify-full",
                crate::sanitize::for_log(m, 32)
            )
        })?,
    };
    // As libpq: `require` with a root certificate checks the chain.
    let mode = match (mode, &root) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (m, _) => m,
    };
    config.ssl_mode(match mode {
        SslMode::Disable => WireMode::Disable,
        SslMode::Prefer => WireMode::Prefer,
        _ => WireMode::Require,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match &root {
                Some(path) => {
                    let path = PathBuf::from(path);
                    let certs = CertificateDer::pem_file_iter(&path)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            format!(
                                "`storage.postgres_url`'s sslrootcert {} cannot be read as PEM certificates: {e}",
                                path.display()
                            )
                        })?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(format!(
                            "`storage.postgres_url`'s sslrootcert {} holds no usable certificate",
                            path.display()
                        ));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot set up certificate checks for PostgreSQL: {e}"))?;
            Some(verifier)
        }
    };
    let verifier = Verifier {
        check,
        check_name: mode == SslMode::VerifyFull,
        provider: provider.clone(),
    };
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS for PostgreSQL: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Target {
        config,
        mode,
        tls: MakeRustlsConnect::new(tls),
    })
}

/// Checks the server's certificate as far as the mode asks; the handshake's
/// signatures are always checked (the peer holds the certificate's key).
#[derive(Debug)]
struct Verifier {
    check: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(check) = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the chain before the name, so a name error means
        // the chain was good.
        match check.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_out_of_both_forms() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) =
            split_tls_params("host=db user=u sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let t = target("postgres://u:secret@db/x?sslmode=require&sslrootcert=/nonexistent").err();
        let t = t.expect("an unreadable root certificate is an error");
        assert!(t.contains("/nonexistent") && !t.contains("secret"), "{t}");
        let t = target("postgres://u:secret@db/x?sslmode=verify-sometimes")
            .err()
            .unwrap();
        assert!(
            t.contains("verify-sometimes") && !t.contains("secret"),
            "{t}"
        );
        assert_eq!(target("postgres://u@db/x").unwrap().mode, SslMode::Prefer);
    }
}
