//! Which plugins get an event: one place, used by every trigger.
//!
//! An event reaches a plugin when the plugin is loaded and its grants
//! cover both the event's address (the channel it came in on, the
//! schedule's name) and its kind ([`admits`]). An inbound webhook event
//! goes to every plugin granted one of its provider's channels
//! ([`on_channels`]); a schedule and a delivery report belong to one plugin
//! and go to it by name ([`to_plugin`]).
//!
//! The runtime checks the kind once more on every dispatch, with the same
//! [`Grants::allows_event`](crate::capabilities::Grants::allows_event):
//! callers that name a plugin directly (the admin API's events,
//! `botbox call`, `botbox dev`) do not come through here.

use std::sync::Arc;

use crate::capabilities::Grants;
use crate::events::event_kind;
use crate::runtime::{Plugin, Runtime};
use crate::wit::types::{Event, EventKind};

/// Why an event does not reach a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No plugin of that name is loaded (a reload removed it).
    NotLoaded,
    /// Its grants do not cover the event's address: the channel it came
    /// in on, or the schedule's name.
    NotAddressed,
    /// Its grants cover the address but not events of this kind.
    NotGranted(EventKind),
}

/// Whether `event` may reach `plugin`: the one rule every trigger routes by.
pub fn admits(plugin: &Plugin, event: &Event) -> Result<(), Refusal> {
    decide(&plugin.context.grants, event)
}

fn decide(grants: &Grants, event: &Event) -> Result<(), Refusal> {
    let addressed = match event {
        Event::ChatMessage(m) => grants.channels.contains(&m.channel),
        Event::Meeting(m) => grants.channels.contains(&m.channel),
        Event::Schedule(name) => grants.schedules.contains(name),
        // A report goes back to the plugin that sent the message, whatever
        // it is granted now; a custom event is addressed by plugin name.
        Event::Delivery(_) | Event::Custom(_) => true,
    };
    if !addressed {
        return Err(Refusal::NotAddressed);
    }
    let kind = event_kind(event);
    if !grants.allows_event(kind) {
        return Err(Refusal::NotGranted(kind));
    }
    Ok(())
}

/// The plugin named `name`, if `event` may reach it: for events that
/// belong to one plugin (its schedule fired, its message finished).
/// Looked up at each call, so a reload that removes the plugin or revokes
/// the grant takes effect at the next event.
pub fn to_plugin(runtime: &Runtime, name: &str, event: &Event) -> Result<Arc<Plugin>, Refusal> {
    let plugin = runtime.plugin(name).ok_or(Refusal::NotLoaded)?;
    admits(&plugin, event)?;
    Ok(plugin)
}

/// One plugin an inbound event goes to, and the event as it sees it.
pub struct Recipient<'a> {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The channel it hears the event on.
    pub channel: &'a str,
    /// The event, on that channel.
    pub event: Event,
}

/// Every loaded plugin an inbound event goes to, once each: a plugin
/// granted one of `channels` (a provider's channels, in order) hears the
/// event on the first of them it is granted, built by `event_on`, if it is
/// granted the event's kind.
pub fn on_channels<'a>(
    runtime: &Runtime,
    channels: &'a [String],
    event_on: impl Fn(&str) -> Event + 'a,
) -> impl Iterator<Item = Recipient<'a>> + 'a {
    runtime.loaded().into_iter().filter_map(move |plugin| {
        let grants = &plugin.context.grants;
        let channel = channels.iter().find(|c| grants.channels.contains(*c))?;
        let event = event_on(channel);
        admits(&plugin, &event).ok()?;
        Some(Recipient {
            plugin,
            channel,
            event,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::types::{ChatMessage, CustomEvent, DeliveryOutcome, DeliveryReport};

    fn chat(channel: &str) -> Event {
        Event::ChatMessage(ChatMessage {
            channel: channel.into(),
            conversation: "c".into(),
            sender_id: "u".into(),
            sender_name: None,
            text: "hi".into(),
            message_id: None,
            sent_at_ms: None,
        })
    }

    fn grants(events: &[EventKind]) -> Grants {
        Grants {
            channels: ["lobby".to_string()].into(),
            events: events.to_vec(),
            schedules: ["tick".to_string()].into(),
            http: Vec::new(),
        }
    }

    #[test]
    fn an_event_needs_its_address_and_its_kind() {
        let all = grants(&[
            EventKind::ChatMessage,
            EventKind::Schedule,
            EventKind::Delivery,
            EventKind::Custom,
        ]);
        assert_eq!(decide(&all, &chat("lobby")), Ok(()));
        assert_eq!(decide(&all, &chat("elsewhere")), Err(Refusal::NotAddressed));
        assert_eq!(decide(&all, &Event::Schedule("tick".into())), Ok(()));
        assert_eq!(
            decide(&all, &Event::Schedule("other".into())),
            Err(Refusal::NotAddressed)
        );

        let none = grants(&[]);
        assert_eq!(
            decide(&none, &chat("lobby")),
            Err(Refusal::NotGranted(EventKind::ChatMessage))
        );
        assert_eq!(
            decide(&none, &Event::Schedule("tick".into())),
            Err(Refusal::NotGranted(EventKind::Schedule))
        );
    }

    #[test]
    fn reports_and_custom_events_are_addressed_by_plugin_only() {
        let report = Event::Delivery(DeliveryReport {
            receipt_id: "r".into(),
            // A channel no longer granted: the report still goes back.
            channel: "gone".into(),
            outcome: DeliveryOutcome::Delivered,
            attempts: 1,
            provider_ids: vec![],
        });
        let custom = Event::Custom(CustomEvent {
            name: "x".into(),
            payload: String::new(),
        });
        let some = grants(&[EventKind::Delivery]);
        assert_eq!(decide(&some, &report), Ok(()));
        assert_eq!(
            decide(&some, &custom),
            Err(Refusal::NotGranted(EventKind::Custom))
        );
    }
}
