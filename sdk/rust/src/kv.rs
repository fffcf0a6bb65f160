//! Small persistent state: one namespace per plugin, kept across restarts
//! and reloads.
//!
//! The host creates a fresh instance for every event, so anything a plugin
//! must remember between events lives here. Keys and values have size limits
//! and the namespace a quota; the errors say which.

use crate::bindings::botbox::bot::kv as raw;

/// Why a kv call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The key is longer than the host allows; the value is the limit in bytes.
    #[error("kv key is too long (the limit is {0} bytes)")]
    KeyTooLong(u32),
    /// The value is longer than the host allows; the value is the limit in bytes.
    #[error("kv value is too large (the limit is {0} bytes)")]
    ValueTooLarge(u32),
    /// The namespace would grow past its quota; the value is the quota in bytes.
    #[error("kv quota of {0} bytes would be exceeded")]
    QuotaExceeded(u64),
    /// The store failed.
    #[error("kv store failed: {0}")]
    Internal(String),
    /// A stored value is not what the plugin expected (not UTF-8, not the JSON
    /// shape). This is the plugin's own data, so it usually means an older
    /// version wrote it.
    #[error("kv value under `{key}` cannot be decoded: {reason}")]
    Decode {
        /// The key whose value failed to decode.
        key: String,
        /// Why.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode the value for kv key `{key}`: {reason}")]
    Encode {
        /// The key it was meant for.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<raw::KvError> for Error {
    fn from(raw: raw::KvError) -> Self {
        match raw {
            raw::KvError::KeyTooLong(n) => Self::KeyTooLong(n),
            raw::KvError::ValueTooLarge(n) => Self::ValueTooLarge(n),
            raw::KvError::QuotaExceeded(n) => Self::QuotaExceeded(n),
            raw::KvError::Internal(s) => Self::Internal(s),
        }
    }
}

/// Lets `handle` use `?`: its error type is the WIT's `string`.
impl From<Error> for String {
    fn from(err: Error) -> Self {
        err.to_string()
    }
}

/// The bytes stored under a key, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(raw::get(key)?)
}

/// Store bytes under a key, replacing any old value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(raw::set(key, value.as_ref())?)
}

/// Remove a key. Removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), Error> {
    Ok(raw::delete(key)?)
}

/// The keys that start with `prefix`, sorted, at most `limit` of them.
pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, Error> {
    Ok(raw::list_keys(prefix, limit)?)
}

/// The UTF-8 text stored under a key, if any.
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    get(key)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|err| Error::Decode {
                key: key.to_owned(),
                reason: err.to_string(),
            })
        })
        .transpose()
}

/// Store text under a key.
pub fn set_string(key: &str, value: &str) -> Result<(), Error> {
    set(key, value.as_bytes())
}

/// The JSON value stored under a key, if any.
#[cfg(feature = "json")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?.map(|bytes| decode_json(key, &bytes)).transpose()
}

/// Store a value as JSON under a key.
#[cfg(feature = "json")]
pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, encode_json(key, value)?)
}

/// Decode a stored JSON value; public so plugins can test their stored
/// formats without a host.
#[cfg(feature = "json")]
pub fn decode_json<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|err| Error::Decode {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

/// Encode a value as stored JSON; public so plugins can test their stored
/// formats without a host.
#[cfg(feature = "json")]
pub fn encode_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|err| Error::Encode {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_well() {
        assert_eq!(
            Error::ValueTooLarge(65536).to_string(),
            "kv value is too large (the limit is 65536 bytes)"
        );
        assert_eq!(
            String::from(Error::from(raw::KvError::Internal("disk full".into()))),
            "kv store failed: disk full"
        );
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip() {
        let bytes = encode_json("k", &vec![1u32, 2, 3]).expect("encodes");
        assert_eq!(decode_json::<Vec<u32>>("k", &bytes), Ok(vec![1, 2, 3]));
        let err = decode_json::<Vec<u32>>("k", b"{").unwrap_err();
        assert!(matches!(err, Error::Decode { ref key, .. } if key == "k"));
    }
}
