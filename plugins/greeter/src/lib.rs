//! greeter: welcomes people when a meeting starts or someone joins it.
//!
//! * Meeting `started`: posts `meeting-greeting` into the meeting.
//! * Meeting `user-joined`: posts `greeting` into the meeting.
//! * Custom event `greet` with payload `{"name": "Ada", "meeting": "m-1"}`
//!   (`meeting` optional): posts `greeting` to the `lobby` channel, into that
//!   meeting when one is given. This is how `botbox call` drives it.
//!
//! Settings: `greeting`, `meeting-greeting` (templates with `{name}` and
//! `{meeting}`), `sender` (display name; the channel's default when unset).

use botbox_sdk::{
    Bot, CustomEvent, Event, EventKind, Manifest, MeetingEvent, MeetingEventKind, Message, settings,
};
use serde::Deserialize;

/// The one channel greeter asks for.
pub const CHANNEL: &str = "lobby";

/// Default for the `greeting` setting.
pub const DEFAULT_GREETING: &str = "Welcome, {name}! You are in {meeting}.";
/// Default for the `meeting-greeting` setting.
pub const DEFAULT_MEETING_GREETING: &str = "{meeting} has started. Welcome, everyone!";

/// The plugin.
pub struct Greeter;

impl Bot for Greeter {
    fn describe() -> Manifest {
        Manifest::new("greeter", env!("CARGO_PKG_VERSION"))
            .channel(CHANNEL)
            .event(EventKind::Meeting)
            .event(EventKind::Custom)
    }

    fn handle(event: Event) -> Result<(), String> {
        let message = match event {
            Event::Meeting(meeting) => match plan_meeting(&meeting, &Config::from_settings()) {
                Some(message) => message,
                None => return Ok(()),
            },
            Event::Custom(custom) => plan_custom(&custom, &Config::from_settings())?,
            // Not asked for; a host that sends them anyway gets no answer.
            _ => return Ok(()),
        };
        let receipt = message.send()?;
        botbox_sdk::info!(
            "greeting queued as {} on {}{}",
            receipt.id,
            message.channel,
            message
                .reply_to
                .as_deref()
                .map(|m| format!(" in {m}"))
                .unwrap_or_default()
        );
        Ok(())
    }
}

botbox_sdk::export_bot!(Greeter);

/// What greeter reads from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Template for a person joining, or a `greet` event.
    pub greeting: String,
    /// Template for a meeting starting.
    pub meeting_greeting: String,
    /// Display name to send as.
    pub sender: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            greeting: DEFAULT_GREETING.to_owned(),
            meeting_greeting: DEFAULT_MEETING_GREETING.to_owned(),
            sender: None,
        }
    }
}

impl Config {
    fn from_settings() -> Self {
        Self {
            greeting: settings::get_or("greeting", DEFAULT_GREETING),
            meeting_greeting: settings::get_or("meeting-greeting", DEFAULT_MEETING_GREETING),
            sender: settings::get("sender").filter(|s| !s.trim().is_empty()),
        }
    }

    fn message(&self, channel: &str, text: String) -> Message {
        let message = Message::text(channel, text);
        match &self.sender {
            Some(sender) => message.sender(sender),
            None => message,
        }
    }
}

/// The payload of a `greet` custom event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreetPayload {
    /// Who to greet.
    pub name: String,
    /// A meeting id to greet them in (also what `{meeting}` shows).
    #[serde(default)]
    pub meeting: Option<String>,
}

/// The message for a meeting event, if it deserves one.
pub fn plan_meeting(event: &MeetingEvent, config: &Config) -> Option<Message> {
    let meeting = event.meeting_label();
    let message = match event.kind {
        MeetingEventKind::Started => config
            .message(
                &event.channel,
                render(&config.meeting_greeting, "everyone", meeting),
            )
            // A meeting starts once: a redelivered `started` must not
            // greet twice.
            .idempotency_key(format!("started:{}", event.meeting_id)),
        // No idempotency key here: the same person may leave and come back,
        // and deserves a second welcome.
        MeetingEventKind::UserJoined => config.message(
            &event.channel,
            render(
                &config.greeting,
                event.user_label().unwrap_or("there"),
                meeting,
            ),
        ),
        MeetingEventKind::Ended
        | MeetingEventKind::UserLeft
        | MeetingEventKind::RecordingStarted
        | MeetingEventKind::RecordingStopped => return None,
    };
    Some(message.reply_to(&event.meeting_id))
}

/// The message for a custom event; only `greet` is understood.
pub fn plan_custom(event: &CustomEvent, config: &Config) -> Result<Message, String> {
    if event.name != "greet" {
        return Err(format!(
            "unknown custom event `{}`: greeter understands `greet` with {{\"name\": ..., \"meeting\": ...}}",
            event.name
        ));
    }
    let payload: GreetPayload = event.payload_json()?;
    let name = payload.name.trim();
    if name.is_empty() {
        return Err("`greet` needs a non-empty `name`".to_owned());
    }
    let meeting = payload
        .meeting
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let text = render(&config.greeting, name, meeting.unwrap_or(CHANNEL));
    let message = config.message(CHANNEL, text);
    Ok(match meeting {
        Some(meeting) => message.reply_to(meeting),
        None => message,
    })
}

/// Fill `{name}` and `{meeting}` in a template. Other braces stay as they
/// are, and the values are inserted verbatim, so a person called `{meeting}`
/// is greeted by that name rather than expanded twice.
pub fn render(template: &str, name: &str, meeting: &str) -> String {
    let mut out = String::with_capacity(template.len() + name.len() + meeting.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{name}") {
            out.push_str(name);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{meeting}") {
            out.push_str(meeting);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting_event(kind: MeetingEventKind, user: Option<&str>) -> MeetingEvent {
        MeetingEvent {
            channel: "lobby".into(),
            kind,
            meeting_id: "m-42".into(),
            meeting_name: Some("Maths 101".into()),
            user_id: Some("u-7".into()),
            user_name: user.map(Into::into),
        }
    }

    fn custom(name: &str, payload: &str) -> CustomEvent {
        CustomEvent {
            name: name.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn render_fills_placeholders() {
        assert_eq!(
            render("Hi {name}, welcome to {meeting}!", "Ada", "Maths"),
            "Hi Ada, welcome to Maths!"
        );
        assert_eq!(render("{name}{name}", "A", "M"), "AA");
    }

    #[test]
    fn render_leaves_other_braces_and_does_not_reexpand() {
        assert_eq!(render("{x} {name} {", "Ada", "M"), "{x} Ada {");
        assert_eq!(render("Hi {name}", "{meeting}", "M"), "Hi {meeting}");
        assert_eq!(render("", "A", "M"), "");
    }

    #[test]
    fn user_joined_greets_into_the_meeting() {
        let config = Config::default();
        let msg = plan_meeting(
            &meeting_event(MeetingEventKind::UserJoined, Some("Ada")),
            &config,
        )
        .expect("greets");
        assert_eq!(msg.channel, "lobby");
        assert_eq!(msg.as_text(), Some("Welcome, Ada! You are in Maths 101."));
        assert_eq!(msg.reply_to.as_deref(), Some("m-42"));
        assert_eq!(msg.idempotency_key, None);
        assert_eq!(msg.sender, None);
    }

    #[test]
    fn user_without_name_is_greeted_by_id() {
        let msg = plan_meeting(
            &meeting_event(MeetingEventKind::UserJoined, None),
            &Config::default(),
        )
        .expect("greets");
        assert_eq!(msg.as_text(), Some("Welcome, u-7! You are in Maths 101."));
    }

    #[test]
    fn meeting_start_is_idempotent_and_uses_its_template() {
        let config = Config {
            sender: Some("Greeter".into()),
            ..Config::default()
        };
        let msg =
            plan_meeting(&meeting_event(MeetingEventKind::Started, None), &config).expect("greets");
        assert_eq!(
            msg.as_text(),
            Some("Maths 101 has started. Welcome, everyone!")
        );
        assert_eq!(msg.idempotency_key.as_deref(), Some("started:m-42"));
        assert_eq!(msg.sender.as_deref(), Some("Greeter"));
    }

    #[test]
    fn other_meeting_events_are_quiet() {
        for kind in [
            MeetingEventKind::Ended,
            MeetingEventKind::UserLeft,
            MeetingEventKind::RecordingStarted,
            MeetingEventKind::RecordingStopped,
        ] {
            assert_eq!(
                plan_meeting(&meeting_event(kind, Some("Ada")), &Config::default()),
                None
            );
        }
    }

    #[test]
    fn greet_event_goes_to_the_lobby() {
        let msg = plan_custom(&custom("greet", r#"{"name": " Ada "}"#), &Config::default())
            .expect("greets");
        assert_eq!(msg.channel, CHANNEL);
        assert_eq!(msg.as_text(), Some("Welcome, Ada! You are in lobby."));
        assert_eq!(msg.reply_to, None);
    }

    #[test]
    fn greet_event_with_meeting_replies_into_it() {
        let msg = plan_custom(
            &custom("greet", r#"{"name": "Ada", "meeting": "m-1"}"#),
            &Config::default(),
        )
        .expect("greets");
        assert_eq!(msg.reply_to.as_deref(), Some("m-1"));
        assert_eq!(msg.as_text(), Some("Welcome, Ada! You are in m-1."));
    }

    #[test]
    fn bad_greet_events_are_refused_with_a_reason() {
        let config = Config::default();
        let err = plan_custom(&custom("greet", r#"{"name": "  "}"#), &config).unwrap_err();
        assert!(err.contains("non-empty"), "{err}");
        let err = plan_custom(&custom("greet", "not json"), &config).unwrap_err();
        assert!(err.contains("not valid"), "{err}");
        let err = plan_custom(&custom("greet", r#"{"nmae": "Ada"}"#), &config).unwrap_err();
        assert!(err.contains("not valid"), "{err}");
        let err = plan_custom(&custom("wave", "{}"), &config).unwrap_err();
        assert!(err.contains("unknown custom event `wave`"), "{err}");
    }
}
