//! BigBlueButton (bbb-webhooks ≥ 3.4): the hook appends
//! `checksum = lowercase_hex(H(callbackURL + rawBody + secret))` to the
//! callback URL, `H` the one algorithm configured (`inbound.checksum`, else
//! the provider's `checksum`, else SHA-256; any other is refused), or sends
//! `Authorization: Bearer {secret}`. The checksum covers the body, so a
//! replay is recognised by the body's hash.
//!
//! The body is JSON, or a form whose `event` field holds the JSON: an array
//! of `{"data": {"type": "event", "id": …, "attributes": {…}, "event": {"ts": …}}}`.

use reqwest::header::AUTHORIZATION;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::api::Checksum;
use crate::config::{ConfigIssue, Secret};
use crate::providers::inbound::{
    Call, Inbound, InboundKind, InboundSetup, Incoming, Parsed, REPLAY_TTL, Refusal, clean_id,
    clean_text, form_pairs, same,
};
use crate::wit::types::MeetingEventKind;

/// The public chat; private chats are not for bots.
const PUBLIC_CHAT: &str = "MAIN-PUBLIC-GROUP-CHAT";
/// More events in one call are refused as malformed.
const MAX_EVENTS: usize = 100;

/// BigBlueButton's inbound registration.
pub(crate) const KIND: InboundKind = InboundKind {
    keys: &["secret", "url", "checksum"],
    setup,
};

/// One BigBlueButton account's callback verifier.
#[derive(Debug)]
pub(crate) struct BbbInbound {
    /// The bbb-webhooks shared secret (checksum or Bearer).
    secret: Secret,
    /// The callback URL exactly as registered with `hooks/create`; the
    /// checksum covers it.
    url: String,
    /// The one checksum algorithm accepted (`inbound.checksum`, else the
    /// provider's `checksum`, else SHA-256). A checksum of another length
    /// is refused, so a caller cannot downgrade to SHA-1.
    checksum: Checksum,
}

/// Reads `inbound.url` and `inbound.checksum`; the provider's own
/// `checksum` is validated with the provider, a bad `inbound.checksum` is
/// reported here.
fn setup(s: &InboundSetup) -> Result<Box<dyn Inbound>, Vec<ConfigIssue>> {
    let key = s.key;
    let mut issues = Vec::new();
    let url = match s.table.get("url") {
        None if s.listen.is_some_and(|l| l.ip().is_unspecified()) => {
            issues.push(ConfigIssue {
                key: format!("{key}.url"),
                message: "is missing, and webhooks.listen does not name a host a callback could be addressed to; set it to the callback URL registered with hooks/create".into(),
            });
            String::new()
        }
        None => s
            .listen
            .map(|l| format!("http://{l}/webhooks/{}", s.name))
            .unwrap_or_default(),
        Some(toml::Value::String(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            u.clone()
        }
        Some(_) => {
            issues.push(ConfigIssue {
                key: format!("{key}.url"),
                message: "must be the callback URL registered with hooks/create, starting with http:// or https://".into(),
            });
            String::new()
        }
    };
    let checksum = match s.table.get("checksum") {
        Some(value) => match value.as_str().and_then(Checksum::parse) {
            Some(c) => c,
            None => {
                issues.push(ConfigIssue {
                    key: format!("{key}.checksum"),
                    message: "must be one of sha1, sha256, sha384, sha512: the algorithm bbb-webhooks signs its callbacks with".into(),
                });
                Checksum::Sha256
            }
        },
        None => s
            .options
            .get("checksum")
            .and_then(toml::Value::as_str)
            .and_then(Checksum::parse)
            .unwrap_or(Checksum::Sha256),
    };
    if issues.is_empty() {
        Ok(Box::new(BbbInbound {
            secret: s.secret.clone(),
            url,
            checksum,
        }))
    } else {
        Err(issues)
    }
}

impl Inbound for BbbInbound {
    fn verify(&self, call: &Call) -> Result<(), Refusal> {
        verify(self, call)
    }

    fn parse(&self, call: &Call) -> Result<Parsed, Refusal> {
        parse(call)
    }

    fn callback_url(&self) -> Option<&str> {
        Some(&self.url)
    }
}

fn verify(hook: &BbbInbound, call: &Call) -> Result<(), Refusal> {
    if let Some(auth) = call.headers.get(AUTHORIZATION) {
        let given = auth
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Refusal::Forged("Authorization is not a Bearer token".into()))?;
        return if same(given, hook.secret.expose().as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::Forged("the Bearer token does not match".into()))
        };
    }
    let Some(checksum) = call.query_param("checksum") else {
        return Err(Refusal::Forged(
            "no checksum parameter and no Authorization header".into(),
        ));
    };
    let checksum = checksum.to_ascii_lowercase();
    let mut input = Vec::with_capacity(hook.url.len() + call.body.len() + 64);
    input.extend_from_slice(hook.url.as_bytes());
    input.extend_from_slice(call.body);
    input.extend_from_slice(hook.secret.expose().as_bytes());
    // Only the configured algorithm: picking it by the checksum's length
    // would let a caller choose the weakest (SHA-1).
    let expected = hook.checksum.hex(&input);
    if checksum.len() != expected.len() {
        return Err(Refusal::Forged(format!(
            "the checksum is not a {} hex digest, the only algorithm accepted (set inbound.checksum to the one bbb-webhooks signs with)",
            hook.checksum.name()
        )));
    }
    if same(expected.as_bytes(), checksum.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Forged(
            "the checksum does not match (is inbound.url the URL registered with hooks/create?)"
                .into(),
        ))
    }
}

fn parse(call: &Call) -> Result<Parsed, Refusal> {
    let value: Value = match serde_json::from_slice(call.body) {
        Ok(v) => v,
        Err(_) => {
            let event = form_pairs(call.body)
                .into_iter()
                .find(|(k, _)| k == "event")
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    Refusal::Malformed("neither JSON nor a form with an `event` field".into())
                })?;
            serde_json::from_str(&event)
                .map_err(|_| Refusal::Malformed("the `event` field is not JSON".into()))?
        }
    };
    let value = match value {
        Value::Object(mut m) if m.contains_key("event") && !m.contains_key("data") => {
            m.remove("event").unwrap_or(Value::Null)
        }
        other => other,
    };
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        _ => return Err(Refusal::Malformed("the events are not a JSON array".into())),
    };
    if items.len() > MAX_EVENTS {
        return Err(Refusal::Malformed(format!(
            "more than {MAX_EVENTS} events in one call"
        )));
    }
    // The checksum covers the body, event times included: a call is
    // acceptable for an hour either side of its newest event, and the
    // replay cache keeps its body's hash that long. A call with no event
    // time could be replayed once the cache let go of it, so it is refused.
    let newest = items
        .iter()
        .filter_map(|i| i.get("data").unwrap_or(i).get("event")?.get("ts")?.as_u64())
        .max()
        .ok_or_else(|| {
            Refusal::Malformed(
                "no event carries event.ts, so a replay could not be told apart".into(),
            )
        })?;
    let window = REPLAY_TTL.as_millis() as u64;
    if call.now_ms.abs_diff(newest) > window {
        return Err(Refusal::Stale(
            "its newest event is more than the replay window of one hour from now".into(),
        ));
    }
    call.fresh_until(newest.saturating_add(window));
    let events = items.iter().filter_map(event).collect();
    Ok(Parsed {
        dedup_key: format!("body:{}", hex::encode(Sha256::digest(call.body))),
        events,
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn event(item: &Value) -> Option<Incoming> {
    let data = item.get("data").unwrap_or(item);
    let id = data.get("id")?.as_str()?;
    let attributes = data.get("attributes")?;
    let meeting = attributes.get("meeting")?;
    let meeting_id = str_at(meeting, &["external-meeting-id"])
        .or_else(|| str_at(meeting, &["internal-meeting-id"]))
        .filter(|m| !m.is_empty())?;
    let meeting_id = clean_id(meeting_id);
    let meeting_name = str_at(meeting, &["name"]).map(clean_id);
    let ts = data
        .get("event")
        .and_then(|e| e.get("ts"))
        .and_then(Value::as_u64);
    let user = attributes.get("user");
    let user_id = user
        .and_then(|u| str_at(u, &["external-user-id"]).or_else(|| str_at(u, &["internal-user-id"])))
        .map(clean_id);
    let user_name = user.and_then(|u| str_at(u, &["name"])).map(clean_id);
    let kind = match id {
        "meeting-created" => MeetingEventKind::Started,
        "meeting-ended" => MeetingEventKind::Ended,
        "user-joined" => MeetingEventKind::UserJoined,
        "user-left" => MeetingEventKind::UserLeft,
        "meeting-recording-started" => MeetingEventKind::RecordingStarted,
        "meeting-recording-stopped" => MeetingEventKind::RecordingStopped,
        "chat-group-message-sent" => {
            if str_at(attributes, &["chat-id"]).is_some_and(|c| c != PUBLIC_CHAT) {
                return None;
            }
            let message = attributes.get("chat-message")?;
            let text = str_at(message, &["message"])?;
            let sender = message.get("sender");
            let sender_id = sender
                .and_then(|s| {
                    str_at(s, &["external-user-id"]).or_else(|| str_at(s, &["internal-user-id"]))
                })
                .unwrap_or("");
            return Some(Incoming::Chat {
                conversation: meeting_id,
                sender_id: clean_id(sender_id),
                sender_name: sender.and_then(|s| str_at(s, &["name"])).map(clean_id),
                text: clean_text(text),
                message_id: str_at(message, &["id"]).map(clean_id),
                sent_at_ms: sender
                    .and_then(|s| s.get("time"))
                    .and_then(Value::as_u64)
                    .or(ts),
            });
        }
        _ => return None,
    };
    Some(Incoming::Meeting {
        kind,
        meeting_id,
        meeting_name,
        user_id: if matches!(
            kind,
            MeetingEventKind::UserJoined | MeetingEventKind::UserLeft
        ) {
            user_id
        } else {
            None
        },
        user_name: if matches!(
            kind,
            MeetingEventKind::UserJoined | MeetingEventKind::UserLeft
        ) {
            user_name
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use sha1::Sha1;
    use sha2::{Sha384, Sha512};

    fn hook() -> BbbInbound {
        BbbInbound {
            secret: Secret::new("s3cret".into()),
            url: "http://bot.example/webhooks/bbb".into(),
            checksum: Checksum::Sha256,
        }
    }

    fn call<'a>(headers: &'a HeaderMap, query: &str, body: &'a [u8]) -> Call<'a> {
        crate::providers::inbound::testing::call(headers, query, body, 0)
    }

    #[test]
    fn only_the_configured_checksum_algorithm_and_bearer() {
        let body = br#"[{"data":{"id":"meeting-ended","attributes":{"meeting":{"external-meeting-id":"m1"}}}}]"#;
        let mut input = b"http://bot.example/webhooks/bbb".to_vec();
        input.extend_from_slice(body);
        input.extend_from_slice(b"s3cret");
        let h = HeaderMap::new();
        let sums = [
            (Checksum::Sha1, hex::encode(Sha1::digest(&input))),
            (Checksum::Sha256, hex::encode(Sha256::digest(&input))),
            (Checksum::Sha384, hex::encode(Sha384::digest(&input))),
            (Checksum::Sha512, hex::encode(Sha512::digest(&input))),
        ];
        for (configured, _) in &sums {
            let hook = BbbInbound {
                checksum: *configured,
                ..hook()
            };
            for (algorithm, sum) in &sums {
                let verdict = verify(&hook, &call(&h, &format!("checksum={sum}"), body));
                if algorithm == configured {
                    verdict.unwrap();
                } else {
                    // A genuine checksum of another algorithm (a downgrade
                    // to SHA-1 above all) is refused.
                    assert!(
                        matches!(&verdict, Err(Refusal::Forged(r)) if r.contains(configured.name())),
                        "{configured:?} accepted {algorithm:?}: {verdict:?}"
                    );
                }
            }
            let sum = &sums.iter().find(|(a, _)| a == configured).unwrap().1;
            let mut bad = sum.clone().into_bytes();
            bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bad).unwrap();
            assert!(verify(&hook, &call(&h, &format!("checksum={bad}"), body)).is_err());
        }
        assert!(verify(&hook(), &call(&h, "", body)).is_err());
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        verify(&hook(), &call(&bearer, "", body)).unwrap();
        bearer.insert(AUTHORIZATION, "Bearer s3creT".parse().unwrap());
        assert!(verify(&hook(), &call(&bearer, "", body)).is_err());
    }

    #[test]
    fn the_algorithm_is_inbound_checksum_else_the_provider_s_else_sha256() {
        let table = |t: &str| -> toml::Table { toml::from_str(t).unwrap() };
        let built = |inbound: &str, options: &str| {
            let (inbound, options) = (table(inbound), table(options));
            let verifier = setup(&InboundSetup {
                name: "bbb",
                key: "providers.bbb.inbound",
                table: &inbound,
                options: &options,
                secret: Secret::new("s".into()),
                listen: Some(([127, 0, 0, 1], 8080).into()),
                base_dir: std::path::Path::new("."),
            })
            .unwrap();
            assert_eq!(
                verifier.callback_url(),
                Some("http://127.0.0.1:8080/webhooks/bbb")
            );
            format!("{verifier:?}")
        };
        assert!(built("", "").contains("checksum: Sha256"));
        assert!(built("", "checksum = \"sha1\"").contains("checksum: Sha1"));
        assert!(built("checksum = \"sha384\"", "checksum = \"sha1\"").contains("checksum: Sha384"));
    }

    #[test]
    fn events_of_both_body_shapes() {
        let json = r#"[{"data":{"type":"event","id":"chat-group-message-sent","attributes":{"meeting":{"internal-meeting-id":"i1","external-meeting-id":"m1","name":"Physics"},"chat-message":{"id":"c1","message":"!help","sender":{"internal-user-id":"w_1","external-user-id":"u1","name":"Ada","time":1700000000000}},"chat-id":"MAIN-PUBLIC-GROUP-CHAT"},"event":{"ts":1700000000001}}},
            {"data":{"type":"event","id":"user-joined","attributes":{"meeting":{"external-meeting-id":"m1"},"user":{"internal-user-id":"w_2","name":"Bob"}},"event":{"ts":1}}},
            {"data":{"id":"chat-group-message-sent","attributes":{"meeting":{"external-meeting-id":"m1"},"chat-message":{"message":"psst"},"chat-id":"private"}}},
            {"data":{"id":"something-else","attributes":{"meeting":{"external-meeting-id":"m1"}}}}]"#;
        let h = HeaderMap::new();
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("event", json)
            .finish();
        for body in [json.as_bytes(), form.as_bytes()] {
            let mut now = call(&h, "", body);
            now.now_ms = 1700000000001;
            let parsed = parse(&now).unwrap();
            assert_eq!(now.fresh_until_ms.get(), Some(1700000000001 + 3_600_000));
            let mut early = call(&h, "", body);
            early.now_ms = 1700000000001 - 3_600_001;
            assert!(matches!(parse(&early), Err(Refusal::Stale(_))));
            let mut late = call(&h, "", body);
            late.now_ms = 1700000000001 + 3_600_001;
            assert!(matches!(parse(&late), Err(Refusal::Stale(_))));
            assert_eq!(parsed.events.len(), 2, "{parsed:?}");
            assert_eq!(
                parsed.events[0],
                Incoming::Chat {
                    conversation: "m1".into(),
                    sender_id: "u1".into(),
                    sender_name: Some("Ada".into()),
                    text: "!help".into(),
                    message_id: Some("c1".into()),
                    sent_at_ms: Some(1700000000000),
                }
            );
            assert!(matches!(
                &parsed.events[1],
                Incoming::Meeting { kind: MeetingEventKind::UserJoined, user_id: Some(u), .. } if u == "w_2"
            ));
        }
    }

    #[test]
    fn hostile_bodies_never_panic() {
        let h = HeaderMap::new();
        for body in [
            &b""[..],
            b"null",
            b"[1,2,3]",
            b"{\"event\": 5}",
            b"event=%ZZ",
            b"[{\"data\": {\"id\": 5}}]",
            b"\xff\xfe",
        ] {
            let _ = parse(&call(&h, "", body));
        }
    }
}
