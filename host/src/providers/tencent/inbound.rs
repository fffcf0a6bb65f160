//! Tencent Cloud Chat callbacks: the query carries `SdkAppid`,
//! `CallbackCommand`, `Sign = hex(sha256(token + RequestTime))` and
//! `RequestTime` (Unix seconds), refused when more than `max_skew_s` off.
//! The signature does not cover the body, so each message is de-duplicated
//! by its id (group: `GroupId` + `MsgSeq`; one-to-one: `MsgKey`).
//!
//! `Group.CallbackAfterSendMsg` becomes a chat message in the group
//! (conversation = `GroupId`); `C2C.CallbackAfterSendMsg` one in the
//! sender's one-to-one conversation (conversation = `c2c:{From_Account}`).
//! Only `TIMTextElem` elements carry text; other commands are acknowledged
//! and ignored.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{ConfigIssue, Secret};
use crate::providers::inbound::{
    Call, Inbound, InboundKind, InboundSetup, Incoming, Parsed, Refusal, clean_id, clean_text, same,
};

/// Tencent's inbound registration.
pub(crate) const KIND: InboundKind = InboundKind {
    keys: &["secret"],
    setup,
};

/// The answer Tencent expects to an accepted callback.
const ACK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// One Tencent account's callback verifier.
#[derive(Debug)]
pub(crate) struct TencentInbound {
    /// The callback token.
    secret: Secret,
    /// The `SdkAppid` a call must name when it names one: the provider's
    /// own `sdkappid`.
    account: Option<String>,
}

fn setup(s: &InboundSetup) -> Result<Box<dyn Inbound>, Vec<ConfigIssue>> {
    Ok(Box::new(TencentInbound {
        secret: s.secret.clone(),
        account: s.options.get("sdkappid").map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    }))
}

impl Inbound for TencentInbound {
    fn verify(&self, call: &Call) -> Result<(), Refusal> {
        verify(self, call)
    }

    fn parse(&self, call: &Call) -> Result<Parsed, Refusal> {
        parse(call)
    }

    fn ack(&self, _call: &Call, _parsed: &Parsed) -> String {
        ACK.into()
    }
}

fn verify(hook: &TencentInbound, call: &Call) -> Result<(), Refusal> {
    let (Some(sign), Some(time)) = (call.query_param("Sign"), call.query_param("RequestTime"))
    else {
        return Err(Refusal::Forged("Sign or RequestTime is missing".into()));
    };
    let expected = hex::encode(Sha256::digest(
        format!("{}{time}", hook.secret.expose()).as_bytes(),
    ));
    if !same(expected.as_bytes(), sign.to_ascii_lowercase().as_bytes()) {
        return Err(Refusal::Forged("Sign does not match".into()));
    }
    if let (Some(expected), Some(given)) = (&hook.account, call.query_param("SdkAppid"))
        && expected != given
    {
        return Err(Refusal::Forged(
            "SdkAppid is not this provider's sdkappid".into(),
        ));
    }
    let seconds: u64 = time
        .parse()
        .map_err(|_| Refusal::Malformed("RequestTime is not Unix seconds".into()))?;
    call.check_fresh(seconds.saturating_mul(1000))
}

fn parse(call: &Call) -> Result<Parsed, Refusal> {
    let body: Value = serde_json::from_slice(call.body)
        .map_err(|_| Refusal::Malformed("the body is not JSON".into()))?;
    if !body.is_object() {
        return Err(Refusal::Malformed("the body is not a JSON object".into()));
    }
    let command = body
        .get("CallbackCommand")
        .and_then(Value::as_str)
        .or_else(|| call.query_param("CallbackCommand"))
        .unwrap_or("");
    let from = body
        .get("From_Account")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sent_at_ms = body
        .get("MsgTime")
        .and_then(Value::as_u64)
        .map(|s| s.saturating_mul(1000));
    let text = text_of(&body);
    let (conversation, message_id) = match command {
        "Group.CallbackAfterSendMsg" => {
            let group = body
                .get("GroupId")
                .and_then(Value::as_str)
                .ok_or_else(|| Refusal::Malformed("GroupId is missing".into()))?;
            let seq = body
                .get("MsgSeq")
                .and_then(Value::as_u64)
                .ok_or_else(|| Refusal::Malformed("MsgSeq is missing".into()))?;
            (clean_id(group), format!("{}:{seq}", clean_id(group)))
        }
        "C2C.CallbackAfterSendMsg" => {
            let key = body
                .get("MsgKey")
                .and_then(Value::as_str)
                .ok_or_else(|| Refusal::Malformed("MsgKey is missing".into()))?;
            if from.is_empty() {
                return Err(Refusal::Malformed("From_Account is missing".into()));
            }
            (
                format!("{}{}", super::C2C_PREFIX, clean_id(from)),
                clean_id(key),
            )
        }
        _ => {
            // Acknowledged, not routed: de-duplicated by the whole body.
            return Ok(Parsed {
                dedup_key: format!("body:{}", hex::encode(Sha256::digest(call.body))),
                events: Vec::new(),
            });
        }
    };
    let events = match text {
        Some(text) => vec![Incoming::Chat {
            conversation,
            sender_id: clean_id(from),
            sender_name: None,
            text,
            message_id: Some(message_id.clone()),
            sent_at_ms,
        }],
        None => Vec::new(),
    };
    Ok(Parsed {
        dedup_key: format!("msg:{message_id}"),
        events,
    })
}

/// The text of every `TIMTextElem`, joined; `None` when there is none.
fn text_of(body: &Value) -> Option<String> {
    let parts: Vec<&str> = body
        .get("MsgBody")?
        .as_array()?
        .iter()
        .take(64)
        .filter(|e| e.get("MsgType").and_then(Value::as_str) == Some("TIMTextElem"))
        .filter_map(|e| e.get("MsgContent")?.get("Text")?.as_str())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(clean_text(&parts.join("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::inbound::testing::call;
    use reqwest::header::HeaderMap;

    fn hook() -> TencentInbound {
        TencentInbound {
            secret: Secret::new("tok".into()),
            account: None,
        }
    }

    #[test]
    fn sign_and_time_are_checked() {
        let h = HeaderMap::new();
        let sign = hex::encode(Sha256::digest(b"tok1700000000"));
        let q = format!("Sign={sign}&RequestTime=1700000000");
        verify(&hook(), &call(&h, &q, b"{}", 1_700_000_030_000)).unwrap();
        assert!(matches!(
            verify(&hook(), &call(&h, &q, b"{}", 1_700_000_061_000)),
            Err(Refusal::Stale(_))
        ));
        let q = format!("Sign={sign}&RequestTime=1700000001");
        assert!(matches!(
            verify(&hook(), &call(&h, &q, b"{}", 1_700_000_000_000)),
            Err(Refusal::Forged(_))
        ));
        assert!(verify(&hook(), &call(&h, "RequestTime=1", b"{}", 0)).is_err());
        let mut other_app = hook();
        other_app.account = Some("1400000001".into());
        let q = format!("SdkAppid=1400000002&Sign={sign}&RequestTime=1700000000");
        assert!(matches!(
            verify(&other_app, &call(&h, &q, b"{}", 1_700_000_000_000)),
            Err(Refusal::Forged(_))
        ));
        let q = format!("SdkAppid=1400000001&Sign={sign}&RequestTime=1700000000");
        verify(&other_app, &call(&h, &q, b"{}", 1_700_000_000_000)).unwrap();
    }

    #[test]
    fn group_and_c2c_messages() {
        let h = HeaderMap::new();
        let group = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"@TGS#1","Type":"AVChatRoom","From_Account":"ada","MsgSeq":7,"MsgTime":1700000000,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"!help"}},{"MsgType":"TIMFaceElem","MsgContent":{"Index":1}}]}"#;
        let p = parse(&call(&h, "", group, 0)).unwrap();
        assert_eq!(p.dedup_key, "msg:@TGS#1:7");
        assert_eq!(
            p.events,
            vec![Incoming::Chat {
                conversation: "@TGS#1".into(),
                sender_id: "ada".into(),
                sender_name: None,
                text: "!help".into(),
                message_id: Some("@TGS#1:7".into()),
                sent_at_ms: Some(1_700_000_000_000),
            }]
        );
        let c2c = br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"ada","To_Account":"bot","MsgKey":"1_2_3","MsgTime":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}"#;
        let p = parse(&call(&h, "", c2c, 0)).unwrap();
        assert!(
            matches!(&p.events[0], Incoming::Chat { conversation, .. } if conversation == "c2c:ada")
        );
        for hostile in [
            &b"[]"[..],
            b"{\"CallbackCommand\":\"Group.CallbackAfterSendMsg\"}",
            b"\x00",
        ] {
            let _ = parse(&call(&h, "", hostile, 0));
        }
    }
}
