//! Helpers on the generated event types.

use crate::{ChatMessage, CustomEvent, Event, EventKind, MeetingEvent};

impl Event {
    /// Which kind of event this is, as a manifest names it.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ChatMessage(_) => EventKind::ChatMessage,
            Event::Meeting(_) => EventKind::Meeting,
            Event::Schedule(_) => EventKind::Schedule,
            Event::Delivery(_) => EventKind::Delivery,
            Event::Custom(_) => EventKind::Custom,
        }
    }
}

impl ChatMessage {
    /// The author's display name, or their provider id when there is none.
    pub fn author(&self) -> &str {
        self.sender_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or(&self.sender_id)
    }
}

impl MeetingEvent {
    /// The meeting's name, or its id when the name is unknown.
    pub fn meeting_label(&self) -> &str {
        self.meeting_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or(&self.meeting_id)
    }

    /// The user's display name, or their id, when the event is about a user.
    pub fn user_label(&self) -> Option<&str> {
        self.user_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .or(self.user_id.as_deref())
    }
}

impl CustomEvent {
    /// Parse the payload as JSON. An empty payload parses as `null`, so a
    /// payload type with all-optional fields accepts `botbox call x name`
    /// without data.
    #[cfg(feature = "json")]
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let payload = if self.payload.trim().is_empty() {
            "null"
        } else {
            &self.payload
        };
        serde_json::from_str(payload)
            .map_err(|err| format!("the payload of `{}` is not valid: {err}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MeetingEventKind;

    fn meeting(name: Option<&str>, user: Option<&str>) -> MeetingEvent {
        MeetingEvent {
            channel: "lobby".into(),
            kind: MeetingEventKind::UserJoined,
            meeting_id: "m-1".into(),
            meeting_name: name.map(Into::into),
            user_id: Some("u-1".into()),
            user_name: user.map(Into::into),
        }
    }

    #[test]
    fn labels_fall_back_to_ids() {
        assert_eq!(meeting(None, None).meeting_label(), "m-1");
        assert_eq!(meeting(Some(" "), None).meeting_label(), "m-1");
        assert_eq!(meeting(Some("Maths"), None).meeting_label(), "Maths");
        assert_eq!(meeting(None, None).user_label(), Some("u-1"));
        assert_eq!(meeting(None, Some("Ada")).user_label(), Some("Ada"));
    }

    #[cfg(feature = "json")]
    #[test]
    fn payload_json() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct P {
            name: Option<String>,
        }
        let ev = |payload: &str| CustomEvent {
            name: "greet".into(),
            payload: payload.into(),
        };
        assert_eq!(
            ev(r#"{"name":"Ada"}"#).payload_json::<P>(),
            Ok(P {
                name: Some("Ada".into())
            })
        );
        assert_eq!(ev("").payload_json::<Option<P>>(), Ok(None));
        let err = ev("{").payload_json::<P>().unwrap_err();
        assert!(
            err.starts_with("the payload of `greet` is not valid"),
            "{err}"
        );
    }
}
