//! The current OAuth pair, sealed into the storage backend.
//!
//! Bitrix24's OAuth page: "Refresh_token lifetime - 28 days or until first
//! use", and "After the indicated refresh_token query is completed, both
//! such query and jointly issued access_token become invalid!"
//! (training.bitrix24.com, course 169, lesson 20134; the newer
//! apidocs.bitrix24.com/settings/oauth/auto-renewal.html gives 180 days).
//! So the pair a refresh returns is the only one that works, and it must
//! outlive the process and reach every host.
//!
//! Each write is sealed with XChaCha20-Poly1305 under the operator's
//! `oauth.token_key`: a fresh random 24-byte nonce per write, and the row's
//! identity and version as associated data, so a row copied to another
//! account or rolled back to an older version does not open.

use std::sync::Arc;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::storage::tokens::{StoredRow, TokenStore};

/// What a sealed row holds.
#[derive(Serialize, Deserialize)]
struct Plain {
    access: String,
    refresh: String,
    /// SHA-256 of the config's refresh token the chain started from: when
    /// the operator puts a new pair in the config (a re-installed app), it
    /// no longer matches, and the config's pair wins.
    seed: String,
}

/// A pair read back from the store.
pub(super) struct Pair {
    pub(super) access: Secret,
    pub(super) refresh: Secret,
    /// Whether it descends from the config's current pair.
    pub(super) same_chain: bool,
}

pub(super) struct PairStore {
    pub(super) store: Arc<TokenStore>,
    /// `bitrix24 providers.NAME PORTAL CLIENT_ID`: no secret in it.
    pub(super) key: String,
    /// The config key naming the encryption key, for error messages.
    pub(super) key_setting: String,
    token_key: Secret,
    seed: String,
}

/// Whether `raw` is a usable key: 32 bytes as 64 hex digits.
pub(super) fn key_is_valid(raw: &str) -> bool {
    let raw = raw.trim();
    raw.len() == 64 && hex::decode(raw).is_ok()
}

impl PairStore {
    pub(super) fn new(
        store: Arc<TokenStore>,
        key: String,
        key_setting: String,
        token_key: Secret,
        config_refresh: &Secret,
    ) -> PairStore {
        PairStore {
            store,
            key,
            key_setting,
            token_key,
            seed: hex::encode(Sha256::digest(config_refresh.expose().as_bytes())),
        }
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, String> {
        hex::decode(self.token_key.expose().trim())
            .ok()
            .and_then(|k| XChaCha20Poly1305::new_from_slice(&k).ok())
            .ok_or_else(|| {
                format!(
                    "`{}` must be 32 random bytes as 64 hex digits (`openssl rand -hex 32`)",
                    self.key_setting
                )
            })
    }

    fn aad(&self, version: i64) -> String {
        format!("botbox oauth pair v1\n{}\n{version}", self.key)
    }

    /// `(nonce, ciphertext)` of `access`/`refresh` as row `version`.
    pub(super) fn seal(
        &self,
        version: i64,
        access: &Secret,
        refresh: &Secret,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let plain = serde_json::to_vec(&Plain {
            access: access.expose().to_string(),
            refresh: refresh.expose().to_string(),
            seed: self.seed.clone(),
        })
        .map_err(|e| e.to_string())?;
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = chacha20poly1305::XNonce::from(nonce_bytes);
        let aad = self.aad(version);
        let sealed = self
            .cipher()?
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| "sealing the OAuth pair failed".to_string())?;
        Ok((nonce_bytes.to_vec(), sealed))
    }

    /// The pair in `row`, if it holds one. An error says which key to set.
    pub(super) fn open(&self, row: &StoredRow) -> Result<Option<Pair>, String> {
        let Some((nonce, sealed)) = &row.sealed else {
            return Ok(None);
        };
        let refused = || {
            format!(
                "the stored Bitrix24 OAuth pair (row `{}`, version {}) does not open with `{}`: \
                 set it to the key the pair was written with; if that key is lost, delete the \
                 row and put a freshly issued pair in the config",
                self.key, row.version, self.key_setting
            )
        };
        let nonce: [u8; 24] = nonce.as_slice().try_into().map_err(|_| refused())?;
        let aad = self.aad(row.version);
        let plain = self
            .cipher()?
            .decrypt(
                &chacha20poly1305::XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        let plain: Plain = serde_json::from_slice(&plain).map_err(|_| refused())?;
        Ok(Some(Pair {
            access: Secret::new(plain.access),
            refresh: Secret::new(plain.refresh),
            same_chain: plain.seed == self.seed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn store(key: &str, token_key: &str, seed: &str) -> PairStore {
        PairStore::new(
            TokenStore::sqlite(std::env::temp_dir().join("botbox-unit-unused.sqlite")),
            key.into(),
            "providers.b24.oauth.token_key".into(),
            Secret::new(token_key.into()),
            &Secret::new(seed.into()),
        )
    }

    fn row(version: i64, sealed: (Vec<u8>, Vec<u8>)) -> StoredRow {
        StoredRow {
            version,
            sealed: Some(sealed),
        }
    }

    #[test]
    fn a_sealed_pair_opens_only_with_its_key_row_and_version() {
        let s = store("bitrix24 a", KEY, "r0");
        let sealed = s
            .seal(
                3,
                &Secret::new("acc-123".into()),
                &Secret::new("ref-456".into()),
            )
            .unwrap();
        assert!(!String::from_utf8_lossy(&sealed.1).contains("acc-123"));
        let pair = s.open(&row(3, sealed.clone())).unwrap().unwrap();
        assert_eq!(pair.access.expose(), "acc-123");
        assert_eq!(pair.refresh.expose(), "ref-456");
        assert!(pair.same_chain);
        // Another version, another row, another key: refused, naming the key.
        for (other, version) in [
            (store("bitrix24 a", KEY, "r0"), 2),
            (store("bitrix24 b", KEY, "r0"), 3),
            (store("bitrix24 a", &KEY.replace("00", "ff"), "r0"), 3),
        ] {
            let err = other.open(&row(version, sealed.clone())).err().unwrap();
            assert!(err.contains("providers.b24.oauth.token_key"), "{err}");
            assert!(!err.contains("acc-123") && !err.contains(KEY), "{err}");
        }
        // A new config pair starts a new chain.
        let pair = store("bitrix24 a", KEY, "r-new")
            .open(&row(3, sealed.clone()))
            .unwrap()
            .unwrap();
        assert!(!pair.same_chain);
        // Each write draws its own nonce.
        let again = s
            .seal(
                3,
                &Secret::new("acc-123".into()),
                &Secret::new("ref-456".into()),
            )
            .unwrap();
        assert_ne!(again.0, sealed.0);
        assert_ne!(again.1, sealed.1);
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert!(key_is_valid(KEY));
        assert!(key_is_valid(&format!(" {KEY}\n")));
        assert!(!key_is_valid(&KEY[..62]));
        assert!(!key_is_valid(&KEY.replace('0', "g")));
    }
}
