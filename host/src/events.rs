//! The event vocabulary shared by every trigger: the kind of an event, its
//! name in config and on the wire, and its JSON form (read from the command
//! line and the admin API).
//!
//! The JSON form:
//!
//! Accepted shapes (keys may use `-` or `_`):
//! - `{"custom": {"name": "greet", "payload": {"name": "Ada"}}}`; a payload
//!   that is not a string is passed on as JSON text;
//! - `{"name": "greet", "payload": …}`, the same, shorter;
//! - `{"schedule": "tick"}`;
//! - `{"chat-message": {"channel": …, "conversation": …, "sender-id": …, "text": …}}`;
//! - `{"meeting": {"channel": …, "kind": "user-joined", "meeting-id": …, "user-name": …}}`.

use serde_json::{Map, Value};

use crate::wit::types::{
    ChatMessage, CustomEvent, Event, EventKind, MeetingEvent, MeetingEventKind,
};

/// Every event kind, in the order the WIT declares them.
pub const EVENT_KINDS: [EventKind; 5] = [
    EventKind::ChatMessage,
    EventKind::Meeting,
    EventKind::Schedule,
    EventKind::Delivery,
    EventKind::Custom,
];

/// An event kind's name in config, grants, logs and the admin API.
pub fn event_kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ChatMessage => "chat-message",
        EventKind::Meeting => "meeting",
        EventKind::Schedule => "schedule",
        EventKind::Delivery => "delivery",
        EventKind::Custom => "custom",
    }
}

/// The kind named `name` (the inverse of [`event_kind_name`]).
pub fn parse_event_kind(name: &str) -> Option<EventKind> {
    EVENT_KINDS
        .into_iter()
        .find(|k| event_kind_name(*k) == name)
}

/// The kind of `event`, which grants are checked against.
pub fn event_kind(event: &Event) -> EventKind {
    match event {
        Event::ChatMessage(_) => EventKind::ChatMessage,
        Event::Meeting(_) => EventKind::Meeting,
        Event::Schedule(_) => EventKind::Schedule,
        Event::Delivery(_) => EventKind::Delivery,
        Event::Custom(_) => EventKind::Custom,
    }
}

/// Why an event's JSON was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event JSON: {0}")]
pub struct EventParseError(pub String);

fn err(msg: impl Into<String>) -> EventParseError {
    EventParseError(msg.into())
}

/// Reads one event from its JSON form (the shapes above).
pub fn parse_event(text: &str) -> Result<Event, EventParseError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = normalize_keys(value) else {
        return Err(err("must be a JSON object"));
    };
    if map.contains_key("name") && !map.contains_key("custom") {
        return custom(Value::Object(map));
    }
    if map.len() != 1 {
        return Err(err(
            "must have exactly one of: custom, schedule, chat_message, meeting",
        ));
    }
    let Some((kind, body)) = map.into_iter().next() else {
        return Err(err("is empty"));
    };
    match kind.as_str() {
        "custom" => custom(body),
        "schedule" => match body {
            Value::String(s) => Ok(Event::Schedule(s)),
            _ => Err(err("schedule must be a string: the schedule's name")),
        },
        "chat_message" => Ok(Event::ChatMessage(chat_message(body)?)),
        "meeting" => Ok(Event::Meeting(meeting(body)?)),
        "delivery" => Err(err("delivery events come from the host only")),
        other => Err(err(format!(
            "unknown event kind `{other}`; use custom, schedule, chat_message or meeting"
        ))),
    }
}

/// Normalizes the keys of the envelope and of the event body, but not
/// inside a custom payload, whose keys belong to the plugin.
fn normalize_keys(value: Value) -> Value {
    fn one_level(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k.replace('-', "_"), v))
                    .collect::<Map<_, _>>(),
            ),
            other => other,
        }
    }
    match one_level(value) {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if k == "payload" { v } else { one_level(v) };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn custom(body: Value) -> Result<Event, EventParseError> {
    let Value::Object(mut map) = body else {
        return Err(err("custom must be an object with name and payload"));
    };
    let name = match map.remove("name") {
        Some(Value::String(s)) => s,
        _ => return Err(err("custom.name must be a string")),
    };
    let payload = match map.remove("payload") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    if let Some(extra) = map.keys().next() {
        return Err(err(format!("custom has an unknown key `{extra}`")));
    }
    Ok(Event::Custom(CustomEvent { name, payload }))
}

fn chat_message(body: Value) -> Result<ChatMessage, EventParseError> {
    serde_json::from_value(body).map_err(|e| {
        err(format!(
            "chat_message: {e} (fields: channel, conversation, sender_id, sender_name?, text, message_id?, sent_at_ms?)"
        ))
    })
}

fn meeting(body: Value) -> Result<MeetingEvent, EventParseError> {
    let Value::Object(mut map) = body else {
        return Err(err("meeting must be an object"));
    };
    let kind = match map.remove("kind") {
        Some(Value::String(s)) => match s.replace('_', "-").as_str() {
            "started" => MeetingEventKind::Started,
            "ended" => MeetingEventKind::Ended,
            "user-joined" => MeetingEventKind::UserJoined,
            "user-left" => MeetingEventKind::UserLeft,
            "recording-started" => MeetingEventKind::RecordingStarted,
            "recording-stopped" => MeetingEventKind::RecordingStopped,
            other => {
                return Err(err(format!(
                    "meeting.kind `{other}` is unknown; use started, ended, user-joined, user-left, recording-started or recording-stopped"
                )));
            }
        },
        _ => return Err(err("meeting.kind must be a string")),
    };
    let text = |map: &mut Map<String, Value>,
                key: &str,
                required: bool|
     -> Result<Option<String>, EventParseError> {
        match map.remove(key) {
            Some(Value::String(s)) => Ok(Some(s)),
            None | Some(Value::Null) if !required => Ok(None),
            _ => Err(err(format!("meeting.{key} must be a string"))),
        }
    };
    let event = MeetingEvent {
        channel: text(&mut map, "channel", true)?.unwrap_or_default(),
        kind,
        meeting_id: text(&mut map, "meeting_id", true)?.unwrap_or_default(),
        meeting_name: text(&mut map, "meeting_name", false)?,
        user_id: text(&mut map, "user_id", false)?,
        user_name: text(&mut map, "user_name", false)?,
    };
    if let Some(extra) = map.keys().next() {
        return Err(err(format!("meeting has an unknown key `{extra}`")));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_shapes() {
        let long =
            parse_event(r#"{"custom": {"name": "greet", "payload": {"first-name": "Ada"}}}"#)
                .unwrap();
        let short = parse_event(r#"{"name": "greet", "payload": {"first-name": "Ada"}}"#).unwrap();
        assert_eq!(long, short);
        assert_eq!(
            long,
            Event::Custom(CustomEvent {
                name: "greet".into(),
                payload: r#"{"first-name":"Ada"}"#.into()
            })
        );
    }

    #[test]
    fn chat_and_meeting_accept_kebab_keys() {
        let e = parse_event(
            r#"{"chat-message": {"channel": "lobby", "conversation": "m1", "sender-id": "u1", "text": "!help"}}"#,
        )
        .unwrap();
        assert!(
            matches!(e, Event::ChatMessage(ref m) if m.text == "!help" && m.sender_name.is_none())
        );
        let e = parse_event(
            r#"{"meeting": {"channel": "lobby", "kind": "user-joined", "meeting-id": "m1", "user-name": "Ada"}}"#,
        )
        .unwrap();
        assert!(matches!(e, Event::Meeting(ref m) if m.kind == MeetingEventKind::UserJoined));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, needle) in [
            ("nope", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"telepathy": 1}"#, "unknown event kind"),
            (r#"{"schedule": 1}"#, "schedule must be a string"),
            (r#"{"meeting": {"kind": "exploded"}}"#, "exploded"),
            (r#"{"delivery": {}}"#, "host only"),
        ] {
            let e = parse_event(bad).unwrap_err();
            assert!(e.0.contains(needle), "{bad}: {e}");
        }
    }
}
