//! Tencent Cloud Chat UserSig, the TLSSigAPIv2 scheme.
//!
//! `TLS.sig` is base64(HMAC-SHA256(secret key text, "TLS.identifier:{id}\n
//! TLS.sdkappid:{appid}\nTLS.time:{t}\nTLS.expire:{exp}\n")). It goes into a
//! JSON object with the other `TLS.*` fields, which is zlib-compressed and
//! base64-encoded with `+`→`*`, `/`→`-`, `=`→`_` so it can ride in a URL.
//! The server decompresses, reads the fields and recomputes the HMAC, so the
//! JSON's key order and the compression level do not matter.

#[cfg(test)]
use std::io::Read;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a UserSig could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserSigError {
    #[error("the secret key cannot key HMAC-SHA256")]
    Key,
    #[error("the UserSig could not be compressed")]
    Compress,
    #[cfg(test)]
    #[error("the UserSig is not base64 in Tencent's URL alphabet")]
    Base64,
    #[cfg(test)]
    #[error("the UserSig is not zlib data")]
    Zlib,
    #[cfg(test)]
    #[error("the UserSig does not hold the TLS.* JSON fields")]
    Json,
}

/// The fields of a UserSig, as the server reads them.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Fields {
    #[serde(rename = "TLS.ver")]
    pub ver: String,
    #[serde(rename = "TLS.identifier")]
    pub identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    pub sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    pub expire: u64,
    #[serde(rename = "TLS.time")]
    pub time: u64,
    #[serde(rename = "TLS.sig")]
    pub sig: String,
}

/// base64 of the HMAC over the fixed field list.
pub fn hmac_sig(
    secret_key: &str,
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
) -> Result<String, UserSigError> {
    let content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .map_err(|_| UserSigError::Key)?;
    mac.update(content.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// A UserSig for `identifier`, made at `time` (Unix seconds) and valid for
/// `expire` seconds.
pub fn generate(
    secret_key: &str,
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
) -> Result<String, UserSigError> {
    let sig = hmac_sig(secret_key, identifier, sdkappid, time, expire)?;
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": time,
        "TLS.sig": sig,
    });
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(doc.to_string().as_bytes())
        .map_err(|_| UserSigError::Compress)?;
    let compressed = z.finish().map_err(|_| UserSigError::Compress)?;
    Ok(to_url_alphabet(&STANDARD.encode(compressed)))
}

fn to_url_alphabet(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// Reads a UserSig back into its fields, as the server would. Bounded: a
/// UserSig is a few hundred bytes. Only the tests need to.
#[cfg(test)]
pub fn decode(usersig: &str) -> Result<Fields, UserSigError> {
    let b64: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = STANDARD.decode(b64).map_err(|_| UserSigError::Base64)?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(64 << 10)
        .read_to_end(&mut json)
        .map_err(|_| UserSigError::Zlib)?;
    serde_json::from_slice(&json).map_err(|_| UserSigError::Json)
}

/// Whether a UserSig's HMAC is right for `secret_key`, and its identity
/// matches. The server's check, used by the tests.
#[cfg(test)]
pub fn verify(usersig: &str, secret_key: &str, identifier: &str, sdkappid: u64) -> bool {
    let Ok(f) = decode(usersig) else {
        return false;
    };
    let Ok(expected) = hmac_sig(secret_key, &f.identifier, f.sdkappid, f.time, f.expire) else {
        return false;
    };
    f.ver == "2.0"
        && f.identifier == identifier
        && f.sdkappid == sdkappid
        && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), f.sig.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inputs of the official SDK tests (tencentyun/tls-sig-api-v2-python
    // TLSSigAPIv2.py main(), tls-sig-api-v2-java TLSSigAPITest, -cs UnitTest1,
    // -cpp unit_test.cpp): sdkappid 1400000000, identifier "xiaojun",
    // expire 180 days, and this key.
    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APPID: u64 = 1_400_000_000;
    const EXPIRE: u64 = 180 * 86400;
    // The SDK tests read the clock, so they publish no fixed-time vector. The
    // expected values below were computed once, independently, by running the
    // official Python SDK's algorithm (TLSSigAPIv2.__hmacsha256 / __gen_sig:
    // hmac, hashlib.sha256, json.dumps, zlib.compress, base64 with the
    // `*-_` alphabet) with time.time() fixed at 1700000000.
    const TIME: u64 = 1_700_000_000;
    const PY_SIG: &str = "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=";
    const PY_USERSIG: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";

    #[test]
    fn hmac_matches_the_official_python_sdk() {
        assert_eq!(
            hmac_sig(KEY, "xiaojun", APPID, TIME, EXPIRE).unwrap(),
            PY_SIG
        );
    }

    #[test]
    fn a_usersig_made_by_the_python_sdk_decodes_and_verifies() {
        let f = decode(PY_USERSIG).unwrap();
        assert_eq!(
            f,
            Fields {
                ver: "2.0".into(),
                identifier: "xiaojun".into(),
                sdkappid: APPID,
                expire: EXPIRE,
                time: TIME,
                sig: PY_SIG.into(),
            }
        );
        assert!(verify(PY_USERSIG, KEY, "xiaojun", APPID));
        assert!(!verify(PY_USERSIG, "another-key", "xiaojun", APPID));
        assert!(!verify(PY_USERSIG, KEY, "administrator", APPID));
    }

    #[test]
    fn generated_usersigs_round_trip_to_the_same_fields() {
        let s = generate(KEY, "administrator", 1_400_000_001, TIME, 86400).unwrap();
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*-_".contains(&b)),
            "{s}"
        );
        let f = decode(&s).unwrap();
        assert_eq!(f.ver, "2.0");
        assert_eq!(f.identifier, "administrator");
        assert_eq!(f.sdkappid, 1_400_000_001);
        assert_eq!((f.time, f.expire), (TIME, 86400));
        assert_eq!(
            f.sig,
            hmac_sig(KEY, "administrator", 1_400_000_001, TIME, 86400).unwrap()
        );
        assert!(verify(&s, KEY, "administrator", 1_400_000_001));
        // Same inputs, same UserSig: nothing random goes in.
        assert_eq!(
            s,
            generate(KEY, "administrator", 1_400_000_001, TIME, 86400).unwrap()
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(decode("!!!"), Err(UserSigError::Base64));
        assert_eq!(decode("aGVsbG8_"), Err(UserSigError::Zlib));
        let not_json = to_url_alphabet(&STANDARD.encode({
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(b"{}").unwrap();
            z.finish().unwrap()
        }));
        assert_eq!(decode(&not_json), Err(UserSigError::Json));
    }
}
