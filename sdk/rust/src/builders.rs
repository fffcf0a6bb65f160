//! Constructors and builder methods on the generated WIT types.
//!
//! The fields stay public, so a struct literal works too; these save spelling
//! out every `None`.

use crate::{
    BroadcastError, ChannelInfo, Content, ContentKind, CustomPayload, EventKind, Location,
    Manifest, Media, Message, MessageOptions, Priority, Receipt,
};

impl Message {
    /// A message with the given content and nothing else set.
    pub fn new(channel: impl Into<String>, content: Content) -> Self {
        Self {
            channel: channel.into(),
            content,
            sender: None,
            extra: None,
            idempotency_key: None,
            reply_to: None,
            options: None,
        }
    }

    /// Plain text.
    pub fn text(channel: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(channel, Content::Text(text.into()))
    }

    /// Structured data for client apps.
    pub fn custom(
        channel: impl Into<String>,
        event: impl Into<String>,
        data: impl Into<String>,
    ) -> Self {
        Self::new(
            channel,
            Content::Custom(CustomPayload {
                event: event.into(),
                data: data.into(),
            }),
        )
    }

    /// A silent command that clients act on and do not show.
    pub fn command(channel: impl Into<String>, action: impl Into<String>) -> Self {
        Self::new(channel, Content::Command(action.into()))
    }

    /// An image at a URL.
    pub fn image(channel: impl Into<String>, media: Media) -> Self {
        Self::new(channel, Content::Image(media))
    }

    /// A file at a URL.
    pub fn file(channel: impl Into<String>, media: Media) -> Self {
        Self::new(channel, Content::File(media))
    }

    /// A point on the map.
    pub fn location(channel: impl Into<String>, location: Location) -> Self {
        Self::new(channel, Content::Location(location))
    }

    /// The display name or account it is sent as, where the provider has one.
    pub fn sender(mut self, sender: impl Into<String>) -> Self {
        self.sender = Some(sender.into());
        self
    }

    /// Answer into one conversation (the `conversation` of a chat message,
    /// or a meeting id) instead of the channel's configured targets.
    pub fn reply_to(mut self, conversation: impl Into<String>) -> Self {
        self.reply_to = Some(conversation.into());
        self
    }

    /// The plugin's own key: sending again with the same key on the same
    /// channel returns the first receipt instead of sending twice. Derive it
    /// from what triggered the message so a retried event stays a no-op.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// A JSON object carried beside the content for client apps.
    pub fn extra(mut self, json: impl Into<String>) -> Self {
        self.extra = Some(json.into());
        self
    }

    /// Provider-specific presentation options.
    pub fn options(mut self, options: MessageOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Show as a system notice, where the provider has them.
    pub fn system(mut self) -> Self {
        self.options
            .get_or_insert_with(MessageOptions::default)
            .system = true;
        self
    }

    /// Rank the message, where the provider ranks messages.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.options
            .get_or_insert_with(MessageOptions::default)
            .priority = Some(priority);
        self
    }

    /// The text, when this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match &self.content {
            Content::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Queue the message for delivery; see [`crate::broadcast::send`].
    pub fn send(&self) -> Result<Receipt, BroadcastError> {
        crate::broadcast::send(self)
    }
}

// wit-bindgen generates the struct, so `#[derive(Default)]` is not an option.
#[allow(clippy::derivable_impls)]
impl Default for MessageOptions {
    fn default() -> Self {
        Self {
            system: false,
            url_preview: None,
            attach: None,
            keyboard: None,
            menu: None,
            priority: None,
        }
    }
}

impl Media {
    /// A file at a URL, with no other details.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            filename: None,
            share_secret: None,
            size_bytes: None,
            format: None,
            width: None,
            height: None,
            duration_secs: None,
            thumbnail_url: None,
            thumbnail_share_secret: None,
        }
    }

    /// The file name shown to users.
    pub fn filename(mut self, name: impl Into<String>) -> Self {
        self.filename = Some(name.into());
        self
    }
}

impl Manifest {
    /// A manifest that asks for nothing yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            channels: Vec::new(),
            events: Vec::new(),
            schedules: Vec::new(),
            #[cfg(feature = "http")]
            http: Vec::new(),
        }
    }

    /// Ask to reach a host over outbound HTTP: `host`, `host:port`, or
    /// `*.domain` for any subdomain (not the domain itself). The operator
    /// grants it under `plugins.NAME.http`; requests to any other host are
    /// refused before a connection is made.
    #[cfg(feature = "http")]
    pub fn http(mut self, host: impl Into<String>) -> Self {
        self.http.push(host.into());
        self
    }

    /// Ask for a channel to send to or hear from.
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(name.into());
        self
    }

    /// Ask for a kind of event.
    pub fn event(mut self, kind: EventKind) -> Self {
        if !self.events.contains(&kind) {
            self.events.push(kind);
        }
        self
    }

    /// Ask for a named schedule; the operator decides when it fires.
    pub fn schedule(mut self, name: impl Into<String>) -> Self {
        self.schedules.push(name.into());
        self
    }
}

impl ChannelInfo {
    /// Whether the channel carries this kind of content.
    pub fn accepts(&self, kind: ContentKind) -> bool {
        self.accepts.contains(&kind)
    }
}

impl Content {
    /// Which kind of content this is, to compare with
    /// [`ChannelInfo::accepts`].
    pub fn kind(&self) -> ContentKind {
        match self {
            Content::Text(_) => ContentKind::Text,
            Content::Custom(_) => ContentKind::Custom,
            Content::Command(_) => ContentKind::Command,
            Content::Image(_) => ContentKind::Image,
            Content::File(_) => ContentKind::File,
            Content::Audio(_) => ContentKind::Audio,
            Content::Video(_) => ContentKind::Video,
            Content::Location(_) => ContentKind::Location,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_builder() {
        let msg = Message::text("lobby", "hi")
            .sender("Bot")
            .reply_to("meeting-1")
            .idempotency_key("k");
        assert_eq!(msg.channel, "lobby");
        assert_eq!(msg.as_text(), Some("hi"));
        assert_eq!(msg.sender.as_deref(), Some("Bot"));
        assert_eq!(msg.reply_to.as_deref(), Some("meeting-1"));
        assert_eq!(msg.idempotency_key.as_deref(), Some("k"));
        assert_eq!(msg.options, None);
    }

    #[test]
    fn option_shortcuts_share_one_options_record() {
        let msg = Message::text("c", "t").system().priority(Priority::High);
        let options = msg.options.expect("options set");
        assert!(options.system);
        assert_eq!(options.priority, Some(Priority::High));
    }

    #[test]
    fn manifest_builder_dedups_event_kinds() {
        let m = Manifest::new("x", "1")
            .channel("lobby")
            .event(EventKind::Custom)
            .event(EventKind::Custom)
            .schedule("tick");
        assert_eq!(m.channels, ["lobby"]);
        assert_eq!(m.events, [EventKind::Custom]);
        assert_eq!(m.schedules, ["tick"]);
    }
}
