//! Easemob request bodies: broadcasts, and replies into one conversation.
//!
//! The three broadcast endpoints share one body: `from`, `msg`, `ext`; the
//! all-users one adds `target_type: "users"`, the chat-room one
//! `chatroom_msg_level`. `msg` holds the message fields of the one-to-one
//! message API plus `type`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::providers::common::file_name_from_url;
use crate::wit::types::{Content, Media, Message, Priority};

/// Request body and `ext` together may be at most 5 KB ("请求体和扩展字段的
/// 总长度不能超过 5 KB", message API docs); KB read as 1024 bytes.
pub const MAX_BODY_BYTES: usize = 5 * 1024;
/// A user ID (`from`) is at most 64 bytes.
pub const MAX_USER_ID_BYTES: usize = 64;
/// `customExts` holds at most 16 entries.
const MAX_CUSTOM_EXTS: usize = 16;
/// `from` when the message names no sender: the server's own default.
pub const DEFAULT_FROM: &str = "admin";

/// Who a channel broadcasts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    AllUsers,
    OnlineUsers,
    Chatrooms,
}

impl Target {
    /// The broadcast of an older config's string target. Channels read
    /// theirs through `providers::target`; the tests and the fuzz entry
    /// point name broadcasts this way.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn parse(name: &str) -> Option<Target> {
        match name {
            "all-users" => Some(Target::AllUsers),
            "online-users" => Some(Target::OnlineUsers),
            "chatrooms" => Some(Target::Chatrooms),
            _ => None,
        }
    }

    /// The path after `{org}/{app}/`.
    pub fn path(self) -> &'static str {
        match self {
            Target::AllUsers => "messages/broadcast",
            Target::OnlineUsers => "messages/users/broadcast",
            Target::Chatrooms => "messages/chatrooms/broadcast",
        }
    }

    /// The throttle key, one per documented rate limit.
    pub fn endpoint(self) -> &'static str {
        match self {
            Target::AllUsers => "all-users-broadcast",
            Target::OnlineUsers => "online-users-broadcast",
            Target::Chatrooms => "chatrooms-broadcast",
        }
    }

    /// The shortest documented window, which a 429 means we hit: once per
    /// 30 minutes, once per minute, once per second.
    pub fn window(self) -> Duration {
        match self {
            Target::AllUsers => Duration::from_secs(30 * 60),
            Target::OnlineUsers => Duration::from_secs(60),
            Target::Chatrooms => Duration::from_secs(1),
        }
    }
}

/// Where a reply goes: the conversation of an Easemob chat-message event,
/// `room:{id}`, `group:{id}` or `user:{id}`, sent with the ordinary message
/// API of that kind instead of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Room,
    Group,
    User,
}

impl ReplyKind {
    /// Splits a conversation into its kind and id.
    pub fn parse(conversation: &str) -> Option<(ReplyKind, &str)> {
        let (kind, id) = conversation.split_once(':')?;
        let kind = match kind {
            "room" => ReplyKind::Room,
            "group" => ReplyKind::Group,
            "user" => ReplyKind::User,
            _ => return None,
        };
        let valid = !id.is_empty()
            && id.len() <= MAX_USER_ID_BYTES
            && id.bytes().all(|b| b.is_ascii_graphic());
        valid.then_some((kind, id))
    }

    /// The path after `{org}/{app}/`.
    pub fn path(self) -> &'static str {
        match self {
            ReplyKind::Room => "messages/chatrooms",
            ReplyKind::Group => "messages/chatgroups",
            ReplyKind::User => "messages/users",
        }
    }

    /// Every reply endpoint, in the order of [`ReplyKind::endpoint`].
    pub const ENDPOINTS: &'static [&'static str] =
        &["chatroom-messages", "chatgroup-messages", "user-messages"];

    /// The throttle key, one per documented rate limit.
    pub fn endpoint(self) -> &'static str {
        match self {
            ReplyKind::Room => "chatroom-messages",
            ReplyKind::Group => "chatgroup-messages",
            ReplyKind::User => "user-messages",
        }
    }
}

/// The body of a reply: the message API's `from`, `to` (one conversation),
/// `type` and `body` (the broadcast `msg` without its `type`), `ext`, and
/// for a chat room `chatroom_msg_level`.
pub fn reply_body(
    kind: ReplyKind,
    to: &str,
    level: Option<&str>,
    message: &Message,
) -> Result<Value, String> {
    let broadcast = request_body(Target::OnlineUsers, None, message)?;
    let Value::Object(mut fields) = broadcast else {
        return Err("the message has no body".into());
    };
    let Some(Value::Object(mut msg)) = fields.remove("msg") else {
        return Err("the message has no body".into());
    };
    let ty = msg.remove("type").unwrap_or(Value::Null);
    fields.insert("to".into(), json!([to]));
    fields.insert("type".into(), ty);
    fields.insert("body".into(), Value::Object(msg));
    if kind == ReplyKind::Room
        && let Some(level) = level
    {
        fields.insert("chatroom_msg_level".into(), json!(level));
    }
    Ok(Value::Object(fields))
}

pub fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

/// `customEvent`: 1 to 32 of `[a-zA-Z0-9-_/.]`.
fn is_custom_event(event: &str) -> bool {
    (1..=32).contains(&event.len())
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b))
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

fn file_name(m: &Media, fallback: &str) -> String {
    m.filename
        .clone()
        .or_else(|| file_name_from_url(&m.url))
        .unwrap_or_else(|| fallback.into())
}

/// The `msg` object for one content, or why Easemob cannot carry it.
pub fn msg(content: &Content) -> Result<Value, String> {
    let mut m = Map::new();
    match content {
        Content::Text(text) => {
            m.insert("type".into(), json!("txt"));
            m.insert("msg".into(), json!(text));
        }
        Content::Image(media) => {
            m.insert("type".into(), json!("img"));
            m.insert("url".into(), json!(media.url));
            m.insert("filename".into(), json!(file_name(media, "image")));
            put(
                &mut m,
                "secret",
                media.share_secret.as_ref().map(|s| json!(s)),
            );
            if let (Some(w), Some(h)) = (media.width, media.height) {
                m.insert("size".into(), json!({ "width": w, "height": h }));
            }
        }
        Content::Audio(media) => {
            m.insert("type".into(), json!("audio"));
            m.insert("url".into(), json!(media.url));
            m.insert("filename".into(), json!(file_name(media, "audio")));
            m.insert("length".into(), json!(media.duration_secs.unwrap_or(0)));
            put(
                &mut m,
                "secret",
                media.share_secret.as_ref().map(|s| json!(s)),
            );
        }
        Content::Video(media) => {
            m.insert("type".into(), json!("video"));
            m.insert("url".into(), json!(media.url));
            m.insert("filename".into(), json!(file_name(media, "video")));
            put(
                &mut m,
                "thumb",
                media.thumbnail_url.as_ref().map(|s| json!(s)),
            );
            m.insert("length".into(), json!(media.duration_secs.unwrap_or(0)));
            put(
                &mut m,
                "secret",
                media.share_secret.as_ref().map(|s| json!(s)),
            );
            put(&mut m, "file_length", media.size_bytes.map(|n| json!(n)));
            put(
                &mut m,
                "thumb_secret",
                media.thumbnail_share_secret.as_ref().map(|s| json!(s)),
            );
        }
        Content::File(media) => {
            m.insert("type".into(), json!("file"));
            m.insert("url".into(), json!(media.url));
            m.insert("filename".into(), json!(file_name(media, "file")));
            put(
                &mut m,
                "secret",
                media.share_secret.as_ref().map(|s| json!(s)),
            );
        }
        Content::Location(l) => {
            // The docs send coordinates as strings ("lat": "39.966").
            m.insert("type".into(), json!("loc"));
            m.insert("lat".into(), json!(l.latitude.to_string()));
            m.insert("lng".into(), json!(l.longitude.to_string()));
            m.insert("addr".into(), json!(l.address.as_deref().unwrap_or("")));
        }
        Content::Command(action) => {
            m.insert("type".into(), json!("cmd"));
            m.insert("action".into(), json!(action));
        }
        Content::Custom(c) => {
            if !is_custom_event(&c.event) {
                return Err(
                    "custom event must be 1 to 32 of a-z A-Z 0-9 - _ / . (Easemob customEvent)"
                        .into(),
                );
            }
            m.insert("type".into(), json!("custom"));
            m.insert("customEvent".into(), json!(c.event));
            if !c.data.trim().is_empty() {
                m.insert("customExts".into(), custom_exts(&c.data)?);
            }
        }
    }
    Ok(Value::Object(m))
}

/// `customExts` is a map of strings to strings, at most 16 of them.
fn custom_exts(data: &str) -> Result<Value, String> {
    const RULE: &str =
        "custom data must be a JSON object of string values (Easemob customExts, at most 16)";
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(data) else {
        return Err(RULE.into());
    };
    if map.len() > MAX_CUSTOM_EXTS || !map.values().all(Value::is_string) {
        return Err(RULE.into());
    }
    Ok(Value::Object(map))
}

/// The whole request body for `target`. `level` is the chat-room priority.
pub fn request_body(
    target: Target,
    level: Option<&str>,
    message: &Message,
) -> Result<Value, String> {
    let mut body = Map::new();
    if target == Target::AllUsers {
        body.insert("target_type".into(), json!("users"));
    }
    let from = message.sender.as_deref().unwrap_or(DEFAULT_FROM);
    if from.is_empty() || from.len() > MAX_USER_ID_BYTES {
        return Err(format!(
            "sender must be an Easemob user ID of 1 to {MAX_USER_ID_BYTES} bytes (from)"
        ));
    }
    body.insert("from".into(), json!(from));
    body.insert("msg".into(), msg(&message.content)?);
    if let Some(extra) = &message.extra {
        match serde_json::from_str::<Value>(extra) {
            Ok(v @ Value::Object(_)) => {
                body.insert("ext".into(), v);
            }
            _ => return Err("extra must be a JSON object (Easemob ext)".into()),
        }
    }
    if target == Target::Chatrooms
        && let Some(level) = level
    {
        body.insert("chatroom_msg_level".into(), json!(level));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{message, text};
    use crate::wit::types::{CustomPayload, Location};

    fn media(url: &str) -> Media {
        Media {
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

    #[test]
    fn reply_bodies_match_the_documented_message_api() {
        // The text example of "发送聊天室消息" (message_chatroom.md).
        let mut m = message(text("testmessages"));
        m.sender = Some("user1".into());
        assert_eq!(
            reply_body(ReplyKind::Room, "185145305923585", None, &m).unwrap(),
            json!({
                "from": "user1",
                "to": ["185145305923585"],
                "type": "txt",
                "body": { "msg": "testmessages" }
            })
        );
        m.extra = Some(r#"{"k":"v"}"#.into());
        assert_eq!(
            reply_body(ReplyKind::Group, "g1", Some("high"), &m).unwrap(),
            json!({
                "from": "user1",
                "to": ["g1"],
                "type": "txt",
                "body": { "msg": "testmessages" },
                "ext": { "k": "v" }
            })
        );
        assert_eq!(
            reply_body(ReplyKind::Room, "r1", Some("low"), &m).unwrap()["chatroom_msg_level"],
            "low"
        );
        assert_eq!(
            ReplyKind::parse("room:185145305923585"),
            Some((ReplyKind::Room, "185145305923585"))
        );
        assert_eq!(ReplyKind::parse("user:ada"), Some((ReplyKind::User, "ada")));
        for bad in ["room9", "room:", "chan:x", "group:a b", "user:\u{1b}[2J"] {
            assert_eq!(ReplyKind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_body_matches_the_documented_example_per_target() {
        let mut m = message(text("send broadcast to all users"));
        m.extra = Some(r#"{"extKey":"extValue"}"#.into());
        assert_eq!(
            request_body(Target::AllUsers, None, &m).unwrap(),
            json!({
                "target_type": "users",
                "msg": { "type": "txt", "msg": "send broadcast to all users" },
                "from": "admin",
                "ext": { "extKey": "extValue" }
            })
        );
        assert_eq!(
            request_body(Target::OnlineUsers, Some("high"), &m).unwrap(),
            json!({
                "msg": { "type": "txt", "msg": "send broadcast to all users" },
                "from": "admin",
                "ext": { "extKey": "extValue" }
            })
        );
        m.sender = Some("bot".into());
        m.extra = None;
        assert_eq!(
            request_body(Target::Chatrooms, Some("low"), &m).unwrap(),
            json!({
                "msg": { "type": "txt", "msg": "send broadcast to all users" },
                "from": "bot",
                "chatroom_msg_level": "low"
            })
        );
    }

    #[test]
    fn image_audio_video_file_bodies() {
        let mut img = media("https://a1.easemob.com/o/a/chatfiles/55f12940");
        img.filename = Some("testimg.jpg".into());
        img.share_secret = Some("VfXXXXNb_".into());
        img.width = Some(480);
        img.height = Some(720);
        assert_eq!(
            msg(&Content::Image(img)).unwrap(),
            json!({ "type": "img", "filename": "testimg.jpg", "secret": "VfXXXXNb_",
                    "url": "https://a1.easemob.com/o/a/chatfiles/55f12940",
                    "size": { "width": 480, "height": 720 } })
        );
        let mut audio = media("https://x/chatfiles/1dfc7f50");
        audio.filename = Some("testaudio.amr".into());
        audio.duration_secs = Some(10);
        audio.share_secret = Some("HfXXXXCjM".into());
        assert_eq!(
            msg(&Content::Audio(audio)).unwrap(),
            json!({ "type": "audio", "url": "https://x/chatfiles/1dfc7f50",
                    "filename": "testaudio.amr", "length": 10, "secret": "HfXXXXCjM" })
        );
        let mut video = media("https://x/chatfiles/671dfe30");
        video.filename = Some("1418105136313.mp4".into());
        video.thumbnail_url = Some("https://x/chatfiles/67279b20".into());
        video.duration_secs = Some(0);
        video.share_secret = Some("VfXXXXNb_".into());
        video.size_bytes = Some(58103);
        video.thumbnail_share_secret = Some("ZyXXXX2I".into());
        assert_eq!(
            msg(&Content::Video(video)).unwrap(),
            json!({ "type": "video", "filename": "1418105136313.mp4",
                    "thumb": "https://x/chatfiles/67279b20", "length": 0, "secret": "VfXXXXNb_",
                    "file_length": 58103, "thumb_secret": "ZyXXXX2I",
                    "url": "https://x/chatfiles/671dfe30" })
        );
        let mut file = media("https://x/chatfiles/d7e7444");
        file.filename = Some("test.txt".into());
        file.share_secret = Some("1-g0XXXXua".into());
        assert_eq!(
            msg(&Content::File(file)).unwrap(),
            json!({ "type": "file", "filename": "test.txt", "secret": "1-g0XXXXua",
                    "url": "https://x/chatfiles/d7e7444" })
        );
        // Without a file name, the URL's last segment names the file.
        let bare = msg(&Content::File(media("https://x/files/report.pdf"))).unwrap();
        assert_eq!(bare["filename"], "report.pdf");
        assert!(bare.get("secret").is_none());
    }

    #[test]
    fn location_command_and_custom_bodies() {
        let loc = Content::Location(Location {
            latitude: 39.966,
            longitude: 116.322,
            address: Some("中国北京市海淀区中关村".into()),
        });
        assert_eq!(
            msg(&loc).unwrap(),
            json!({ "type": "loc", "lat": "39.966", "lng": "116.322", "addr": "中国北京市海淀区中关村" })
        );
        assert_eq!(
            msg(&Content::Command("action1".into())).unwrap(),
            json!({ "type": "cmd", "action": "action1" })
        );
        let custom = |event: &str, data: &str| {
            msg(&Content::Custom(CustomPayload {
                event: event.into(),
                data: data.into(),
            }))
        };
        assert_eq!(
            custom("custom_event", "").unwrap(),
            json!({ "type": "custom", "customEvent": "custom_event" })
        );
        assert_eq!(
            custom("gift/sent", r#"{"gift":"rose","count":"3"}"#).unwrap(),
            json!({ "type": "custom", "customEvent": "gift/sent",
                    "customExts": { "gift": "rose", "count": "3" } })
        );
        assert!(custom("gift", r#"{"count":3}"#).is_err());
        assert!(custom("gift", "[1,2]").is_err());
        assert!(custom("gift", "not json").is_err());
        assert!(custom("has space", "").is_err());
        assert!(custom(&"e".repeat(33), "").is_err());
        let seventeen: Map<String, Value> =
            (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(custom("e", &Value::Object(seventeen).to_string()).is_err());
    }

    #[test]
    fn from_and_ext_rules() {
        let mut m = message(text("hi"));
        m.sender = Some("x".repeat(65));
        assert!(request_body(Target::AllUsers, None, &m).is_err());
        m.sender = Some(String::new());
        assert!(request_body(Target::AllUsers, None, &m).is_err());
        m.sender = None;
        m.extra = Some("[1]".into());
        assert!(request_body(Target::AllUsers, None, &m).is_err());
        m.extra = Some("null".into());
        assert!(request_body(Target::AllUsers, None, &m).is_err());
    }

    #[test]
    fn targets_parse_and_name_their_endpoints() {
        for (name, path, endpoint) in [
            ("all-users", "messages/broadcast", "all-users-broadcast"),
            (
                "online-users",
                "messages/users/broadcast",
                "online-users-broadcast",
            ),
            (
                "chatrooms",
                "messages/chatrooms/broadcast",
                "chatrooms-broadcast",
            ),
        ] {
            let t = Target::parse(name).unwrap();
            assert_eq!((t.path(), t.endpoint()), (path, endpoint));
        }
        assert_eq!(Target::parse("everyone"), None);
    }
}
