//! Easemob message callbacks: a JSON body with `callId`, `timestamp` (Unix
//! ms) and `security = md5_hex(callId + secret + timestamp)`. The signature
//! covers only `callId` and `timestamp`, so the time is checked against
//! `max_skew_s` and each call de-duplicated by its signed `callId`: a
//! captured signature buys at most one body, and none once the genuine call
//! was handled. Easemob's message callbacks name the message in the callId,
//! `{appkey}_{msg_id}` ("callId … 格式为 'App Key_发送的消息的 ID'",
//! <https://doc.easemob.com/product/callback/callback_message_send.html>;
//! the same for recalls and read receipts); where it does, an unsigned
//! `msg_id` or `appkey` that disagrees with it is refused as forged. Older
//! rules send `{appkey}_{uuid}` (callback_configurations, v2), which ties
//! nothing but the call itself.
//!
//! `eventType = "chat"` with `chat_type` `groupchat` or `chatroom` becomes
//! a chat message in that group or room (conversation `group:{to}` or
//! `room:{to}`); `chat` (one-to-one) one in the sender's conversation
//! (`user:{from}`). The kind travels in the conversation because each kind
//! is answered through its own message API. Only `txt` bodies carry text.

use md5::Md5;
use serde_json::Value;
use sha2::Digest;

use crate::config::{ConfigIssue, Secret};
use crate::providers::inbound::{
    Call, Inbound, InboundKind, InboundSetup, Incoming, Parsed, Refusal, clean_id, clean_text, same,
};

/// Easemob's inbound registration.
pub(crate) const KIND: InboundKind = InboundKind {
    keys: &["secret"],
    setup,
};

/// One Easemob account's callback verifier.
#[derive(Debug)]
pub(crate) struct EasemobInbound {
    /// The callback secret.
    secret: Secret,
    /// The `appkey` (`org#app`) a call must name when it names one, from
    /// the provider's own `org` and `app`.
    account: Option<String>,
}

fn setup(s: &InboundSetup) -> Result<Box<dyn Inbound>, Vec<ConfigIssue>> {
    let account = match (
        s.options.get("org").and_then(toml::Value::as_str),
        s.options.get("app").and_then(toml::Value::as_str),
    ) {
        (Some(org), Some(app)) => Some(format!("{org}#{app}")),
        _ => None,
    };
    Ok(Box::new(EasemobInbound {
        secret: s.secret.clone(),
        account,
    }))
}

impl Inbound for EasemobInbound {
    fn verify(&self, call: &Call) -> Result<(), Refusal> {
        verify(self, call)
    }

    fn parse(&self, call: &Call) -> Result<Parsed, Refusal> {
        parse(call)
    }
}

fn verify(hook: &EasemobInbound, call: &Call) -> Result<(), Refusal> {
    let body: Value = serde_json::from_slice(call.body)
        .map_err(|_| Refusal::Malformed("the body is not JSON".into()))?;
    let call_id = body.get("callId").and_then(Value::as_str);
    let security = body.get("security").and_then(Value::as_str);
    let timestamp = body.get("timestamp");
    let (Some(call_id), Some(security), Some(timestamp)) = (call_id, security, timestamp) else {
        return Err(Refusal::Forged(
            "callId, security or timestamp is missing".into(),
        ));
    };
    let timestamp_text = match timestamp {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(Refusal::Malformed("timestamp is not a number".into())),
    };
    let expected = hex::encode(Md5::digest(
        format!("{call_id}{}{timestamp_text}", hook.secret.expose()).as_bytes(),
    ));
    if !same(
        expected.as_bytes(),
        security.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(Refusal::Forged("security does not match".into()));
    }
    if let (Some(expected), Some(given)) =
        (&hook.account, body.get("appkey").and_then(Value::as_str))
        && expected != given
    {
        return Err(Refusal::Forged(
            "appkey is not this provider's org#app".into(),
        ));
    }
    check_ids(hook, call_id, &body)?;
    let sent_ms: u64 = timestamp_text
        .parse()
        .map_err(|_| Refusal::Malformed("timestamp is not Unix milliseconds".into()))?;
    call.check_fresh(sent_ms)
}

/// The unsigned ids must agree with the signed `callId` where Easemob ties
/// them: `callId = {appkey}_{suffix}` (an appkey has no `_`: org and app
/// names are letters, digits and hyphens), and a suffix of digits is the
/// message id (`msg_id`).
fn check_ids(hook: &EasemobInbound, call_id: &str, body: &Value) -> Result<(), Refusal> {
    let Some((signed_appkey, suffix)) = call_id.split_once('_') else {
        return Ok(());
    };
    let given = body.get("appkey").and_then(Value::as_str);
    if given.is_some_and(|g| g != signed_appkey)
        || hook.account.as_deref().is_some_and(|a| a != signed_appkey)
    {
        return Err(Refusal::Forged(
            "the signed callId names another appkey".into(),
        ));
    }
    let names_a_message = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit());
    if names_a_message {
        match body.get("msg_id") {
            None => {}
            Some(Value::String(id)) if id == suffix => {}
            Some(_) => {
                return Err(Refusal::Forged(
                    "msg_id is not the message id the signed callId names".into(),
                ));
            }
        }
    }
    Ok(())
}

fn parse(call: &Call) -> Result<Parsed, Refusal> {
    let body: Value = serde_json::from_slice(call.body)
        .map_err(|_| Refusal::Malformed("the body is not JSON".into()))?;
    let call_id = body.get("callId").and_then(Value::as_str).unwrap_or("");
    let message_id = body.get("msg_id").and_then(Value::as_str).map(clean_id);
    // The signed id, whole: what the signature covers is what tells calls
    // apart. Not cleaned or cut, so two calls never share a key.
    let dedup_key = format!("call:{call_id}");
    let event_type = body.get("eventType").and_then(Value::as_str).unwrap_or("");
    if event_type != "chat" {
        return Ok(Parsed {
            dedup_key,
            events: Vec::new(),
        });
    }
    let from = body.get("from").and_then(Value::as_str).unwrap_or("");
    let to = body.get("to").and_then(Value::as_str).unwrap_or("");
    if from.is_empty() {
        return Err(Refusal::Malformed("from is missing".into()));
    }
    let conversation = match body.get("chat_type").and_then(Value::as_str) {
        Some("groupchat") if !to.is_empty() => format!("group:{}", clean_id(to)),
        Some("chatroom") if !to.is_empty() => format!("room:{}", clean_id(to)),
        Some("chat") => format!("user:{}", clean_id(from)),
        _ => return Err(Refusal::Malformed("chat_type or to is missing".into())),
    };
    let text: Vec<&str> = body
        .get("payload")
        .and_then(|p| p.get("bodies"))
        .and_then(Value::as_array)
        .map(|bodies| {
            bodies
                .iter()
                .take(64)
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("txt"))
                .filter_map(|b| b.get("msg").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let events = if text.is_empty() {
        Vec::new()
    } else {
        vec![Incoming::Chat {
            conversation,
            sender_id: clean_id(from),
            sender_name: None,
            text: clean_text(&text.join("")),
            message_id,
            sent_at_ms: body.get("timestamp").and_then(Value::as_u64),
        }]
    };
    Ok(Parsed { dedup_key, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn hook() -> EasemobInbound {
        EasemobInbound {
            secret: Secret::new("sec".into()),
            account: None,
        }
    }

    fn body(security: &str, timestamp: u64) -> Vec<u8> {
        format!(
            r#"{{"callId":"org#app_1","eventType":"chat","chat_type":"groupchat","timestamp":{timestamp},"security":"{security}","from":"ada","to":"g1","msg_id":"1","appkey":"org#app","payload":{{"bodies":[{{"type":"txt","msg":"!time"}}]}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn security_time_and_message() {
        let h = HeaderMap::new();
        let sec = hex::encode(Md5::digest(b"org#app_1sec1700000000000"));
        let ok = body(&sec, 1_700_000_000_000);
        let call =
            |b: &'static [u8], now_ms| crate::providers::inbound::testing::call(&h, "", b, now_ms);
        let ok: &'static [u8] = ok.leak();
        verify(&hook(), &call(ok, 1_700_000_001_000)).unwrap();
        assert!(matches!(
            verify(&hook(), &call(ok, 1_700_000_100_000)),
            Err(Refusal::Stale(_))
        ));
        let bad: &'static [u8] = body(&"0".repeat(32), 1_700_000_000_000).leak();
        assert!(matches!(
            verify(&hook(), &call(bad, 1_700_000_000_000)),
            Err(Refusal::Forged(_))
        ));
        let p = parse(&call(ok, 0)).unwrap();
        assert_eq!(p.dedup_key, "call:org#app_1");
        assert!(
            !format!("{p:?}").contains(&sec),
            "no signature in the event"
        );
        assert!(
            matches!(&p.events[0], Incoming::Chat { conversation, text, .. } if conversation == "group:g1" && text == "!time")
        );
        // The signed callId names message 1: another msg_id or appkey is
        // a body grafted onto a captured signature.
        for (field, value) in [
            ("msg_id", "\"2\""),
            ("msg_id", "2"),
            ("appkey", "\"evil#app\""),
        ] {
            let mut grafted: Value = serde_json::from_slice(ok).unwrap();
            grafted[field] = serde_json::from_str(value).unwrap();
            let grafted: &'static [u8] = serde_json::to_vec(&grafted).unwrap().leak();
            assert!(
                matches!(
                    verify(&hook(), &call(grafted, 1_700_000_001_000)),
                    Err(Refusal::Forged(_))
                ),
                "{field} = {value}"
            );
        }
        for hostile in [&b"{}"[..], b"[]", b"{\"eventType\":\"chat\",\"from\":5}"] {
            let _ = verify(&hook(), &call(hostile, 0));
            let _ = parse(&call(hostile, 0));
        }
    }
}
