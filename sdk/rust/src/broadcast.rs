//! Send messages to channels.
//!
//! The host checks the grant and the channel provider's rules, persists the
//! message and returns a [`Receipt`] before any network call. The outcome
//! arrives later as an [`Event::Delivery`](crate::Event::Delivery), if the
//! plugin asked for delivery events.

use crate::bindings::botbox::bot::broadcast as raw;
use crate::{BroadcastError, ChannelInfo, Message, Receipt};

/// Queue one message for delivery.
pub fn send(msg: &Message) -> Result<Receipt, BroadcastError> {
    raw::send_broadcast(msg).map_err(BroadcastError::from)
}

/// Queue a plain text message on a channel, to the channel's configured
/// targets.
pub fn send_text(channel: &str, text: &str) -> Result<Receipt, BroadcastError> {
    send(&Message::text(channel, text))
}

/// The channels this plugin may send to, with each one's rules.
pub fn channels() -> Vec<ChannelInfo> {
    raw::channels()
}

/// The rules of one granted channel, if the plugin may use it.
pub fn channel(name: &str) -> Option<ChannelInfo> {
    channels().into_iter().find(|c| c.name == name)
}
