//! Bitrix24 bot events: a form body with PHP-style keys
//! (`event=ONIMBOTMESSAGEADD&data[PARAMS][DIALOG_ID]=chat12&…&ts=…&auth[application_token]=…`).
//! `auth[application_token]` is compared in constant time; it is static and
//! does not cover the body, so `ts` (Unix seconds) is checked against
//! `max_skew_s` and each message de-duplicated by `MESSAGE_ID`.
//!
//! `ONIMBOTMESSAGEADD` becomes a chat message with `DIALOG_ID` as the
//! conversation; other events are acknowledged and ignored.

use sha2::{Digest, Sha256};

use crate::config::{ConfigIssue, Secret};
use crate::providers::inbound::{
    Call, Inbound, InboundKind, InboundSetup, Incoming, Parsed, Refusal, clean_id, clean_text,
    form_pairs, same,
};

/// Bitrix24's inbound registration.
pub(crate) const KIND: InboundKind = InboundKind {
    keys: &["secret"],
    setup,
};

/// One Bitrix24 account's callback verifier.
#[derive(Debug)]
pub(crate) struct Bitrix24Inbound {
    /// The application token (`auth[application_token]`).
    secret: Secret,
}

fn setup(s: &InboundSetup) -> Result<Box<dyn Inbound>, Vec<ConfigIssue>> {
    Ok(Box::new(Bitrix24Inbound {
        secret: s.secret.clone(),
    }))
}

impl Inbound for Bitrix24Inbound {
    fn verify(&self, call: &Call) -> Result<(), Refusal> {
        verify(self, call)
    }

    fn parse(&self, call: &Call) -> Result<Parsed, Refusal> {
        parse(call)
    }
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn verify(hook: &Bitrix24Inbound, call: &Call) -> Result<(), Refusal> {
    let pairs = form_pairs(call.body);
    let Some(token) = field(&pairs, "auth[application_token]") else {
        return Err(Refusal::Forged("auth[application_token] is missing".into()));
    };
    if !same(token.as_bytes(), hook.secret.expose().as_bytes()) {
        return Err(Refusal::Forged(
            "auth[application_token] does not match".into(),
        ));
    }
    let ts: u64 = field(&pairs, "ts")
        .ok_or_else(|| Refusal::Malformed("ts is missing".into()))?
        .parse()
        .map_err(|_| Refusal::Malformed("ts is not Unix seconds".into()))?;
    call.check_fresh(ts.saturating_mul(1000))
}

fn parse(call: &Call) -> Result<Parsed, Refusal> {
    let pairs = form_pairs(call.body);
    let event = field(&pairs, "event").unwrap_or("");
    if !event.eq_ignore_ascii_case("ONIMBOTMESSAGEADD") {
        return Ok(Parsed {
            dedup_key: format!("body:{}", hex::encode(Sha256::digest(call.body))),
            events: Vec::new(),
        });
    }
    let dialog = field(&pairs, "data[PARAMS][DIALOG_ID]")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Refusal::Malformed("data[PARAMS][DIALOG_ID] is missing".into()))?;
    let message_id = field(&pairs, "data[PARAMS][MESSAGE_ID]")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Refusal::Malformed("data[PARAMS][MESSAGE_ID] is missing".into()))?;
    let text = field(&pairs, "data[PARAMS][MESSAGE]").unwrap_or("");
    let sender_id = field(&pairs, "data[PARAMS][FROM_USER_ID]")
        .or_else(|| field(&pairs, "data[USER][ID]"))
        .unwrap_or("");
    let sender_name = field(&pairs, "data[USER][NAME]").map(clean_id);
    let sent_at_ms = field(&pairs, "ts")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000));
    Ok(Parsed {
        dedup_key: format!("msg:{}", clean_id(message_id)),
        events: vec![Incoming::Chat {
            conversation: clean_id(dialog),
            sender_id: clean_id(sender_id),
            sender_name,
            text: clean_text(text),
            message_id: Some(clean_id(message_id)),
            sent_at_ms,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn token_time_and_message() {
        let hook = Bitrix24Inbound {
            secret: Secret::new("apptok".into()),
        };
        let h = HeaderMap::new();
        let body = |token: &str, ts: u64| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("event", "ONIMBOTMESSAGEADD")
                .append_pair("data[PARAMS][DIALOG_ID]", "chat12")
                .append_pair("data[PARAMS][MESSAGE_ID]", "345")
                .append_pair("data[PARAMS][MESSAGE]", "!help")
                .append_pair("data[PARAMS][FROM_USER_ID]", "7")
                .append_pair("data[USER][NAME]", "Ada")
                .append_pair("ts", &ts.to_string())
                .append_pair("auth[application_token]", token)
                .finish()
        };
        let ok = body("apptok", 1_700_000_000);
        fn call<'a>(h: &'a HeaderMap, b: &'a str, now_ms: u64) -> Call<'a> {
            crate::providers::inbound::testing::call(h, "", b.as_bytes(), now_ms)
        }
        verify(&hook, &call(&h, &ok, 1_700_000_010_000)).unwrap();
        assert!(matches!(
            verify(&hook, &call(&h, &ok, 1_700_001_000_000)),
            Err(Refusal::Stale(_))
        ));
        assert!(matches!(
            verify(
                &hook,
                &call(&h, &body("apptoK", 1_700_000_000), 1_700_000_000_000)
            ),
            Err(Refusal::Forged(_))
        ));
        assert!(verify(&hook, &call(&h, "event=ONIMBOTMESSAGEADD", 0)).is_err());
        let p = parse(&call(&h, &ok, 0)).unwrap();
        assert_eq!(p.dedup_key, "msg:345");
        assert!(
            !format!("{p:?}").contains("apptok"),
            "no credential in the event"
        );
        assert_eq!(
            p.events,
            vec![Incoming::Chat {
                conversation: "chat12".into(),
                sender_id: "7".into(),
                sender_name: Some("Ada".into()),
                text: "!help".into(),
                message_id: Some("345".into()),
                sent_at_ms: Some(1_700_000_000_000),
            }]
        );
        for hostile in [
            "",
            "event=ONIMBOTMESSAGEADD",
            "%%%",
            "event=onimbotmessageadd&data[PARAMS][DIALOG_ID]=",
        ] {
            let _ = parse(&call(&h, hostile, 0));
        }
    }
}
