//! Client-side signing, written from the providers' documented formulas, for
//! the simulator's own tests and for demos that need a signed request
//! without the host. The host's provider clients must keep their own
//! implementation: this module is the *independent* one they are checked against.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::io::Write;

use crate::bbb::ChecksumAlg;
use crate::codec::java_url_encode;

/// BigBlueButton: `lowercase_hex(H(callName + queryString + sharedSecret))`,
/// where `queryString` is exactly the encoded query that is sent, without
/// `checksum`.
pub fn bbb_checksum(alg: ChecksumAlg, call: &str, query: &str, secret: &str) -> String {
    let input = format!("{call}{query}{secret}");
    match alg {
        ChecksumAlg::Sha1 => hex::encode(Sha1::digest(input.as_bytes())),
        ChecksumAlg::Sha256 => hex::encode(Sha256::digest(input.as_bytes())),
        ChecksumAlg::Sha384 => hex::encode(Sha384::digest(input.as_bytes())),
        ChecksumAlg::Sha512 => hex::encode(Sha512::digest(input.as_bytes())),
    }
}

/// A query string encoded the way BigBlueButton's own clients do (Java's
/// URLEncoder: a space is `+`).
pub fn bbb_query(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", java_url_encode(k), java_url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `{base}/{call}?{query}&checksum={checksum}` (or `?checksum=` alone when
/// there are no parameters), `base` ending in `/bigbluebutton/api`.
pub fn bbb_url(
    base: &str,
    call: &str,
    params: &[(&str, &str)],
    secret: &str,
    alg: ChecksumAlg,
) -> String {
    let query = bbb_query(params);
    let checksum = bbb_checksum(alg, call, &query, secret);
    if query.is_empty() {
        format!("{base}/{call}?checksum={checksum}")
    } else {
        format!("{base}/{call}?{query}&checksum={checksum}")
    }
}

/// The string TLSSigAPIv2 signs: one `TLS.key:value\n` line each for
/// identifier, sdkappid, time and expire (and userbuf, when present, base64).
pub(crate) fn tencent_sig_content(
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf_b64: Option<&str>,
) -> String {
    let mut s = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(buf) = userbuf_b64 {
        s.push_str(&format!("TLS.userbuf:{buf}\n"));
    }
    s
}

/// `base64(HMAC-SHA256(key = secret key's text bytes, content))`.
pub(crate) fn tencent_hmac(secret_key: &str, content: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty MAC would
    // simply never verify.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()) else {
        return String::new();
    };
    mac.update(content.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A Tencent Cloud Chat UserSig (TLSSigAPIv2): the signature goes as
/// `TLS.sig` into a JSON object with `TLS.ver` "2.0", identifier, sdkappid,
/// expire and time; the JSON is zlib-compressed and base64-encoded with
/// `+`→`*`, `/`→`-`, `=`→`_`. `time` is Unix seconds, `expire` a lifetime in seconds.
pub fn tencent_usersig(
    sdkappid: u64,
    identifier: &str,
    secret_key: &str,
    time: u64,
    expire: u64,
) -> String {
    let sig = tencent_hmac(
        secret_key,
        &tencent_sig_content(identifier, sdkappid, time, expire, None),
    );
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": time,
        "TLS.sig": sig,
    });
    tencent_pack(&doc.to_string())
}

/// zlib + Tencent's URL-safe base64; exposed so tests can build malformed sigs.
pub fn tencent_pack(json: &str) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let compressed = z
        .write_all(json.as_bytes())
        .and_then(|()| z.finish())
        .unwrap_or_default();
    STANDARD
        .encode(compressed)
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

/// The query string of a Tencent REST call; the caller appends it to
/// `{base}/v4/{service}/{command}?`.
pub fn tencent_query(sdkappid: u64, identifier: &str, usersig: &str, random: u32) -> String {
    format!(
        "sdkappid={sdkappid}&identifier={}&usersig={}&random={random}&contenttype=json",
        java_url_encode(identifier),
        java_url_encode(usersig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbb_checksum_matches_known_vectors() {
        // Computed independently with coreutils' sha1sum / sha256sum.
        assert_eq!(
            bbb_checksum(ChecksumAlg::Sha1, "getMeetings", "", "secret"),
            "867e6596b930651c0cd4dd1912bec902fae56d5a"
        );
        assert_eq!(
            bbb_checksum(
                ChecksumAlg::Sha256,
                "sendChatMessage",
                "meetingID=room-1&message=Hello+world%21",
                "sim-secret"
            ),
            "d2e4e3b6adabb6ccf88a012192f1da2fb5df6affa17a7b691c16c34ae4eeb5c1"
        );
        for alg in ChecksumAlg::ALL {
            assert_eq!(bbb_checksum(alg, "x", "y", "z").len(), alg.hex_len());
        }
    }

    #[test]
    fn tencent_hmac_matches_python_hmac() {
        // Python: base64(hmac.new(b"k", content, sha256).digest())
        let content = tencent_sig_content("admin", 1400000000, 1_700_000_000, 86400, None);
        assert_eq!(
            tencent_hmac("k", &content),
            "erRjqoIj99GSBjzwMpqc0IBGDr+kE5vm0YWWNUeEK1s="
        );
    }

    #[test]
    fn bbb_query_uses_plus_for_space() {
        assert_eq!(
            bbb_query(&[("meetingID", "room 1"), ("message", "a&b=c")]),
            "meetingID=room+1&message=a%26b%3Dc"
        );
    }

    #[test]
    fn usersig_uses_tencents_alphabet() {
        let s = tencent_usersig(1400000000, "admin", "k", 1_700_000_000, 86400);
        assert!(!s.contains(['+', '/', '=']));
    }
}
