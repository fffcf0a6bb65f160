//! Wire encodings the servers use: Java's URLEncoder/URLDecoder (BigBlueButton
//! is a Java server), form bodies, PHP's nested form keys (Bitrix24 is PHP)
//! and XML text escaping.

use serde_json::{Map, Value};

/// A `%` not followed by two hex digits: Java's URLDecoder throws on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed percent-encoding in query string")]
pub struct DecodeError;

/// Decodes like `java.net.URLDecoder.decode(s, UTF_8)`: `+` is a space, `%XX`
/// are UTF-8 bytes (invalid UTF-8 becomes U+FFFD), a broken `%` is an error.
pub fn java_url_decode(s: &str) -> Result<String, DecodeError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
                match (hi, lo) {
                    // Two hex digits fit in a byte.
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(DecodeError),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Encodes like `java.net.URLEncoder.encode(s, UTF_8)`: letters, digits and
/// `.-*_` stay, a space becomes `+`, every other byte becomes `%XX` (upper case).
pub fn java_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Splits a raw query string (or form body) into decoded pairs, in order.
/// A piece without `=` has an empty value; empty pieces are skipped.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, DecodeError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|piece| {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((java_url_decode(k)?, java_url_decode(v)?))
        })
        .collect()
}

/// The first value of `key`, like a servlet's `getParameter`.
pub fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// PHP's nesting limit is 64; a form key deeper than this is taken literally.
const MAX_DEPTH: usize = 16;

/// Builds what PHP makes of a form body: `A[B][]=x` nests, later keys win,
/// and objects keyed exactly 0..n become arrays.
pub fn php_form(pairs: Vec<(String, String)>) -> Map<String, Value> {
    let mut root = Map::new();
    for (key, value) in pairs {
        let (base, path) = split_php_key(&key);
        if base.is_empty() {
            continue;
        }
        insert_nested(&mut root, base, &path, Value::String(value));
    }
    root.into_iter().map(|(k, v)| (k, listify(v))).collect()
}

fn split_php_key(key: &str) -> (String, Vec<String>) {
    let Some(open) = key.find('[') else {
        return (key.to_owned(), Vec::new());
    };
    let base = key[..open].to_owned();
    let mut path = Vec::new();
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        if path.len() == MAX_DEPTH {
            return (key.to_owned(), Vec::new());
        }
        path.push(stripped[..close].to_owned());
        rest = &stripped[close + 1..];
    }
    (base, path)
}

fn insert_nested(map: &mut Map<String, Value>, key: String, path: &[String], value: Value) {
    let Some((head, tail)) = path.split_first() else {
        map.insert(key, value);
        return;
    };
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(child) = child {
        let next = if head.is_empty() {
            child.len().to_string()
        } else {
            head.clone()
        };
        insert_nested(child, next, tail, value);
    }
}

fn listify(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let sequential = !map.is_empty()
                && map
                    .keys()
                    .enumerate()
                    .all(|(i, k)| map.contains_key(&i.to_string()) && !k.is_empty());
            if sequential {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, listify(v))))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, listify(v))).collect())
            }
        }
        other => other,
    }
}

/// Escapes text for an XML element body.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// PHP's `intval` on a string: optional whitespace and sign, then leading
/// digits; anything else is 0. Saturates instead of wrapping.
pub fn php_intval(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn java_decoding_treats_plus_as_space_and_rejects_broken_escapes() {
        assert_eq!(
            java_url_decode("Welcome+to+the%20conference%21").as_deref(),
            Ok("Welcome to the conference!")
        );
        assert_eq!(java_url_decode("%E4%BD%A0").as_deref(), Ok("你"));
        assert_eq!(java_url_decode("100%"), Err(DecodeError));
        assert_eq!(java_url_decode("%zz"), Err(DecodeError));
    }

    #[test]
    fn java_encoding_matches_urlencoder() {
        assert_eq!(java_url_encode("a b*c~d/é"), "a+b*c%7Ed%2F%C3%A9");
        let s = "Grüße & <tags> 100% ~ ok?";
        assert_eq!(java_url_decode(&java_url_encode(s)).as_deref(), Ok(s));
    }

    #[test]
    fn php_forms_nest_and_listify() {
        let pairs = parse_query(
            "DIALOG_ID=chat1&ATTACH[0][MESSAGE]=hi&ATTACH[1][LINK][LINK]=http%3A%2F%2Fx&KEYBOARD[][TEXT]=a&KEYBOARD[][TEXT]=b",
        )
        .unwrap_or_default();
        let m = php_form(pairs);
        assert_eq!(m["DIALOG_ID"], json!("chat1"));
        assert_eq!(
            m["ATTACH"],
            json!([{"MESSAGE": "hi"}, {"LINK": {"LINK": "http://x"}}])
        );
        assert_eq!(m["KEYBOARD"], json!([{"TEXT": "a"}, {"TEXT": "b"}]));
    }

    #[test]
    fn intval_is_phps() {
        assert_eq!(php_intval("256"), 256);
        assert_eq!(php_intval(" 12abc"), 12);
        assert_eq!(php_intval("abc"), 0);
        assert_eq!(php_intval("-3"), -3);
        assert_eq!(php_intval("99999999999999999999999"), i64::MAX);
    }
}
