//! A message as Tencent `MsgBody` elements (the "Message Formats" page).
//!
//! Media goes by URL with `Download_Flag` 2 ("download from this URL"),
//! which is how the REST API sends files it did not upload. The UUID fields
//! must be unique per file; the docs suggest the file's MD5, which the host
//! does not have, so it uses the MD5 of the URL: stable and unique per file.

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::providers::common::{extension_from_url, file_name_from_url};
use crate::wit::types::{Content, Media, Message};

/// The largest `MsgBody` Tencent takes, in bytes of JSON.
pub const MAX_MSG_BODY_BYTES: usize = 12_000;

fn uuid_of(url: &str) -> String {
    hex::encode(Md5::digest(url.as_bytes()))
}

/// `TIMImageElem.ImageFormat`: JPG 1, GIF 2, PNG 3, BMP 4, other 255.
fn image_format(media: &Media) -> u32 {
    let ext = media
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .or_else(|| extension_from_url(&media.url));
    match ext.as_deref() {
        Some("jpg" | "jpeg") => 1,
        Some("gif") => 2,
        Some("png") => 3,
        Some("bmp") => 4,
        _ => 255,
    }
}

/// The `MsgBody` array for one message, or why Tencent cannot carry it.
pub fn msg_body(message: &Message) -> Result<Value, String> {
    let element = match &message.content {
        Content::Text(text) => json!({
            "MsgType": "TIMTextElem",
            "MsgContent": { "Text": text },
        }),
        Content::Custom(c) => json!({
            "MsgType": "TIMCustomElem",
            "MsgContent": { "Data": c.data, "Desc": c.event },
        }),
        Content::Location(l) => json!({
            "MsgType": "TIMLocationElem",
            "MsgContent": {
                "Desc": l.address.as_deref().unwrap_or(""),
                "Latitude": l.latitude,
                "Longitude": l.longitude,
            },
        }),
        Content::Image(m) => {
            let size = m.size_bytes.unwrap_or(0);
            let (w, h) = (m.width.unwrap_or(0), m.height.unwrap_or(0));
            let thumb = m.thumbnail_url.as_deref().unwrap_or(&m.url);
            json!({
                "MsgType": "TIMImageElem",
                "MsgContent": {
                    "UUID": uuid_of(&m.url),
                    "ImageFormat": image_format(m),
                    "ImageInfoArray": [
                        { "Type": 1, "Size": size, "Width": w, "Height": h, "URL": m.url },
                        { "Type": 2, "Size": size, "Width": w, "Height": h, "URL": m.url },
                        { "Type": 3, "Size": 0, "Width": 0, "Height": 0, "URL": thumb },
                    ],
                },
            })
        }
        Content::File(m) => json!({
            "MsgType": "TIMFileElem",
            "MsgContent": {
                "Url": m.url,
                "UUID": uuid_of(&m.url),
                "FileSize": m.size_bytes.unwrap_or(0),
                "FileName": m
                    .filename
                    .clone()
                    .or_else(|| file_name_from_url(&m.url))
                    .unwrap_or_else(|| "file".into()),
                "Download_Flag": 2,
            },
        }),
        Content::Audio(m) => json!({
            "MsgType": "TIMSoundElem",
            "MsgContent": {
                "Url": m.url,
                "UUID": uuid_of(&m.url),
                "Size": m.size_bytes.unwrap_or(0),
                "Second": m.duration_secs.unwrap_or(0),
                "Download_Flag": 2,
            },
        }),
        Content::Video(m) => {
            let Some(thumb) = m.thumbnail_url.as_deref() else {
                return Err(
                    "a Tencent video message needs a thumbnail-url (TIMVideoFileElem.ThumbUrl)"
                        .into(),
                );
            };
            let video_format = m
                .format
                .clone()
                .or_else(|| extension_from_url(&m.url))
                .unwrap_or_else(|| "mp4".into());
            let thumb_format = extension_from_url(thumb)
                .map(|e| e.to_ascii_uppercase())
                .unwrap_or_else(|| "JPG".into());
            json!({
                "MsgType": "TIMVideoFileElem",
                "MsgContent": {
                    "VideoUrl": m.url,
                    "VideoUUID": uuid_of(&m.url),
                    "VideoSize": m.size_bytes.unwrap_or(0),
                    "VideoSecond": m.duration_secs.unwrap_or(0),
                    "VideoFormat": video_format,
                    "VideoDownloadFlag": 2,
                    "ThumbUrl": thumb,
                    "ThumbUUID": uuid_of(thumb),
                    "ThumbSize": 0,
                    "ThumbWidth": m.width.unwrap_or(0),
                    "ThumbHeight": m.height.unwrap_or(0),
                    "ThumbFormat": thumb_format,
                    "ThumbDownloadFlag": 2,
                },
            })
        }
        Content::Command(_) => {
            return Err("Tencent has no silent command message; send custom content".into());
        }
    };
    Ok(Value::Array(vec![element]))
}

/// The `MsgBody` of several messages in one request: their elements in order.
pub fn merged_msg_body(first: &Message, rest: &[Message]) -> Result<Value, String> {
    let mut elements = Vec::new();
    for message in std::iter::once(first).chain(rest) {
        if let Value::Array(items) = msg_body(message)? {
            elements.extend(items);
        }
    }
    Ok(Value::Array(elements))
}

/// The whole request body of `send_broadcast_msg`; `rest` are messages
/// merged after `message` (same sender and custom data).
///
/// A reply to a group goes with `send_group_msg`, whose body is the
/// broadcast's plus the `GroupId`. A reply to one user (`to_account`) goes
/// with `openim/sendmsg` (1047/34919): `To_Account`, and the dedup number
/// is `MsgRandom` there.
pub fn request_body(
    message: &Message,
    rest: &[Message],
    random: u32,
    to_account: Option<&str>,
) -> Result<Value, String> {
    let mut body = serde_json::Map::new();
    match (to_account, &message.reply_to) {
        (Some(peer), _) => {
            // 1: the reply also lands on the sending account's other
            // devices and in its roaming history, as one its own client
            // sent would; 2 when the admin itself sends, whose history
            // nobody reads.
            let sync = if message.sender.is_some() { 1 } else { 2 };
            body.insert("SyncOtherMachine".into(), json!(sync));
            body.insert("To_Account".into(), Value::String(peer.to_owned()));
            // The after-send callback would bring the bot's own reply back
            // to botbox as a new one-to-one chat message (in the
            // conversation of the bot's account); the before-send callback,
            // the app's own moderation, still runs.
            body.insert(
                "ForbidCallbackControl".into(),
                json!(["ForbidAfterSendMsgCallback"]),
            );
        }
        (None, Some(group)) => {
            body.insert("GroupId".into(), Value::String(group.clone()));
        }
        (None, None) => {}
    }
    if let Some(sender) = &message.sender {
        body.insert("From_Account".into(), Value::String(sender.clone()));
    }
    let random_key = if to_account.is_some() {
        "MsgRandom"
    } else {
        "Random"
    };
    body.insert(random_key.into(), json!(random));
    body.insert("MsgBody".into(), merged_msg_body(message, rest)?);
    if let Some(extra) = &message.extra {
        body.insert("CloudCustomData".into(), Value::String(extra.clone()));
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
    fn text_custom_and_location_elements() {
        assert_eq!(
            msg_body(&message(text("hello world"))).unwrap(),
            json!([{ "MsgType": "TIMTextElem", "MsgContent": { "Text": "hello world" } }])
        );
        let custom = Content::Custom(CustomPayload {
            event: "notification".into(),
            data: "{ \"type\":1, \"content\":\"hello world\"}".into(),
        });
        assert_eq!(
            msg_body(&message(custom)).unwrap(),
            json!([{ "MsgType": "TIMCustomElem", "MsgContent": {
                "Data": "{ \"type\":1, \"content\":\"hello world\"}", "Desc": "notification" } }])
        );
        let loc = Content::Location(Location {
            latitude: 29.340656774469956,
            longitude: 116.77497920478824,
            address: Some("someinfo".into()),
        });
        assert_eq!(
            msg_body(&message(loc)).unwrap(),
            json!([{ "MsgType": "TIMLocationElem", "MsgContent": {
                "Desc": "someinfo", "Latitude": 29.340656774469956, "Longitude": 116.77497920478824 } }])
        );
    }

    #[test]
    fn media_elements_carry_urls_with_download_flag_2() {
        let mut img = media("https://cdn.example.com/a/photo.PNG");
        img.width = Some(1080);
        img.height = Some(1920);
        img.size_bytes = Some(248_321);
        img.thumbnail_url = Some("https://cdn.example.com/a/thumb.png".into());
        let body = msg_body(&message(Content::Image(img))).unwrap();
        let c = &body[0]["MsgContent"];
        assert_eq!(body[0]["MsgType"], "TIMImageElem");
        assert_eq!(c["ImageFormat"], 3);
        assert_eq!(c["UUID"], uuid_of("https://cdn.example.com/a/photo.PNG"));
        assert_eq!(c["ImageInfoArray"][0]["Width"], 1080);
        assert_eq!(c["ImageInfoArray"][0]["Size"], 248_321);
        assert_eq!(
            c["ImageInfoArray"][2]["URL"],
            "https://cdn.example.com/a/thumb.png"
        );

        let file = msg_body(&message(Content::File(media("https://x/doc/report.pdf")))).unwrap();
        assert_eq!(file[0]["MsgType"], "TIMFileElem");
        assert_eq!(file[0]["MsgContent"]["FileName"], "report.pdf");
        assert_eq!(file[0]["MsgContent"]["Download_Flag"], 2);

        let mut snd = media("https://x/v.aac");
        snd.duration_secs = Some(6);
        let sound = msg_body(&message(Content::Audio(snd))).unwrap();
        assert_eq!(sound[0]["MsgType"], "TIMSoundElem");
        assert_eq!(sound[0]["MsgContent"]["Second"], 6);
        assert_eq!(sound[0]["MsgContent"]["Download_Flag"], 2);

        let mut vid = media("https://x/clip.mp4");
        assert!(msg_body(&message(Content::Video(vid.clone()))).is_err());
        vid.thumbnail_url = Some("https://x/clip.jpg".into());
        vid.duration_secs = Some(17);
        let video = msg_body(&message(Content::Video(vid))).unwrap();
        let c = &video[0]["MsgContent"];
        assert_eq!(video[0]["MsgType"], "TIMVideoFileElem");
        assert_eq!(c["VideoFormat"], "mp4");
        assert_eq!(c["ThumbFormat"], "JPG");
        assert_eq!(c["VideoSecond"], 17);
        assert_eq!(c["VideoDownloadFlag"], 2);
        assert_eq!(c["ThumbDownloadFlag"], 2);
        assert_ne!(c["VideoUUID"], c["ThumbUUID"]);
    }

    #[test]
    fn request_body_has_sender_random_and_custom_data() {
        let mut m = message(text("hi"));
        let body = request_body(&m, &[], 8_912_345, None).unwrap();
        assert_eq!(
            body,
            json!({ "Random": 8_912_345, "MsgBody": [{ "MsgType": "TIMTextElem", "MsgContent": { "Text": "hi" } }] })
        );
        m.sender = Some("test".into());
        m.extra = Some("{\"k\":\"v\"}".into());
        let body = request_body(&m, &[], u32::MAX, None).unwrap();
        assert_eq!(body["From_Account"], "test");
        assert_eq!(body["Random"], 4_294_967_295u64);
        assert_eq!(body["CloudCustomData"], "{\"k\":\"v\"}");
    }

    /// The one-to-one body of 1047/34919: To_Account, MsgRandom (not
    /// Random), SyncOtherMachine, no GroupId, and no after-send callback.
    #[test]
    fn a_one_to_one_reply_has_to_account_and_msg_random() {
        let mut m = message(text("pong"));
        m.reply_to = Some("c2c:ada".into());
        let body = request_body(&m, &[], 1_287_657, Some("ada")).unwrap();
        assert_eq!(
            body,
            json!({
                "SyncOtherMachine": 2,
                "To_Account": "ada",
                "ForbidCallbackControl": ["ForbidAfterSendMsgCallback"],
                "MsgRandom": 1_287_657,
                "MsgBody": [{ "MsgType": "TIMTextElem", "MsgContent": { "Text": "pong" } }],
            })
        );
        m.sender = Some("helpdesk".into());
        m.extra = Some("{}".into());
        let body = request_body(&m, &[], 7, Some("ada")).unwrap();
        assert_eq!(body["SyncOtherMachine"], 1);
        assert_eq!(body["From_Account"], "helpdesk");
        assert_eq!(body["CloudCustomData"], "{}");
        assert!(body.get("GroupId").is_none() && body.get("Random").is_none());
    }

    #[test]
    fn commands_are_not_tencent_content() {
        assert!(msg_body(&message(Content::Command("x".into()))).is_err());
    }
}
