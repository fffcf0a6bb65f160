//! Builds WIT values from fuzz input, so the targets reach the code behind
//! the byte parsers: the conversion of messages into provider requests.

use arbitrary::{Result, Unstructured};
use botbox::wit::types::{
    Content, CustomPayload, Location, Media, Message, MessageOptions, Priority,
};

fn text(u: &mut Unstructured) -> Result<String> {
    u.arbitrary()
}

fn opt_text(u: &mut Unstructured) -> Result<Option<String>> {
    u.arbitrary()
}

fn media(u: &mut Unstructured) -> Result<Media> {
    Ok(Media {
        url: text(u)?,
        filename: opt_text(u)?,
        share_secret: opt_text(u)?,
        size_bytes: u.arbitrary()?,
        format: opt_text(u)?,
        width: u.arbitrary()?,
        height: u.arbitrary()?,
        duration_secs: u.arbitrary()?,
        thumbnail_url: opt_text(u)?,
        thumbnail_share_secret: opt_text(u)?,
    })
}

fn content(u: &mut Unstructured) -> Result<Content> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Content::Text(text(u)?),
        1 => Content::Custom(CustomPayload {
            event: text(u)?,
            data: text(u)?,
        }),
        2 => Content::Command(text(u)?),
        3 => Content::Image(media(u)?),
        4 => Content::File(media(u)?),
        5 => Content::Audio(media(u)?),
        6 => Content::Video(media(u)?),
        _ => Content::Location(Location {
            latitude: u.arbitrary()?,
            longitude: u.arbitrary()?,
            address: opt_text(u)?,
        }),
    })
}

fn options(u: &mut Unstructured) -> Result<Option<MessageOptions>> {
    if !u.arbitrary::<bool>()? {
        return Ok(None);
    }
    Ok(Some(MessageOptions {
        system: u.arbitrary()?,
        url_preview: u.arbitrary()?,
        attach: opt_text(u)?,
        keyboard: opt_text(u)?,
        menu: opt_text(u)?,
        priority: match u.int_in_range(0..=3u8)? {
            0 => None,
            1 => Some(Priority::Low),
            2 => Some(Priority::Normal),
            _ => Some(Priority::High),
        },
    }))
}

/// A message as a plugin could pass it to `send-broadcast`: any field, any
/// text, no rules applied.
pub fn message(u: &mut Unstructured) -> Result<Message> {
    Ok(Message {
        channel: text(u)?,
        content: content(u)?,
        sender: opt_text(u)?,
        extra: opt_text(u)?,
        idempotency_key: opt_text(u)?,
        reply_to: opt_text(u)?,
        options: options(u)?,
    })
}
