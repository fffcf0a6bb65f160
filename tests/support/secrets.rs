//! The secrets a provider test must never show: every credential it
//! configured or saw on the wire, and the check that a text holds none.
//!
//! The set is shared by the tests of one binary (as the captured log is), so
//! every log, record and error is checked against all of them.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use serde_json::Value;

use super::lock;
use super::sims::Tap;

/// Every secret any test configured or saw on the wire. The log buffer is
/// shared by the tests of one binary, so it is checked against all of them.
fn secrets() -> &'static Mutex<BTreeSet<String>> {
    static SECRETS: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(BTreeSet::new()))
}

/// Adds a value (trimmed, at least 8 bytes) to the secrets every text is
/// checked against.
pub fn add_secret(value: &str) {
    let value = value.trim();
    assert!(value.len() >= 8, "too short to be a distinctive secret");
    lock(secrets()).insert(value.to_string());
}

/// Fails if `text` holds any known secret, naming where and which (masked).
pub fn assert_no_secret(what: &str, text: &str) {
    let known = lock(secrets()).clone();
    for secret in &known {
        if let Some(at) = text.find(secret.as_str()) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what} shows the secret {}…({} bytes) after: {:?}",
                &secret[..4],
                secret.len(),
                &text[start..at]
            );
        }
    }
}

/// The values following `prefix` in `text`, up to a character `stop` accepts.
pub fn values_after(text: &str, prefix: &str, stop: fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let end = rest.find(stop).unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// `TLS.sig` inside a UserSig: the HMAC itself, a secret of its own.
fn usersig_hmac(usersig: &str) -> Option<String> {
    let b64: String = usersig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let mut json_text = String::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_string(&mut json_text)
        .ok()?;
    let doc: Value = serde_json::from_str(&json_text).ok()?;
    doc["TLS.sig"].as_str().map(str::to_string)
}

/// Registers every credential that crossed the taps. Returns how many
/// distinct ones were seen, by kind, so tests can check the tap saw them.
pub fn harvest(taps: &[&Tap]) -> BTreeSet<(&'static str, String)> {
    let quote = |c: char| c == '"';
    let query_end = |c: char| c == '&' || c == ' ' || c == '\r' || c == '\n';
    let line_end = |c: char| c == '\r' || c == '\n';
    let mut found = BTreeSet::new();
    for tap in taps {
        for text in tap.traffic() {
            for v in values_after(&text, "usersig=", query_end) {
                if let Some(hmac) = usersig_hmac(&v) {
                    found.insert(("tencent TLS.sig", hmac));
                }
                found.insert(("tencent usersig", v));
            }
            for v in values_after(&text, "\"access_token\":\"", quote) {
                found.insert(("access_token", v));
            }
            for v in values_after(&text, "\"refresh_token\":\"", quote) {
                found.insert(("refresh_token", v));
            }
            for v in values_after(&text, "Bearer ", line_end) {
                found.insert(("bearer", v));
            }
            for v in values_after(&text, "\"auth\":\"", quote) {
                found.insert(("bitrix auth", v));
            }
        }
    }
    for (_, v) in &found {
        add_secret(v);
    }
    found
}
