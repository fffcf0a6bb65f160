//! The providers' side of inbound callbacks: each simulator can send the
//! signed call its real server (or bbb-webhooks) would send to a bot.
//!
//! | provider | authenticity, as documented |
//! |---|---|
//! | BigBlueButton (bbb-webhooks ≥ 3.4) | `checksum = sha256(callbackURL + body + secret)` appended to the callback URL |
//! | Tencent | `?Sign = hex(sha256(token + RequestTime))&RequestTime=…` |
//! | Easemob | `security = md5_hex(callId + secret + timestamp)` in the JSON body |
//! | Bitrix24 | `auth[application_token]` in the form body |
//!
//! BBB callbacks go to every hook registered with `hooks/create`; the other
//! three go to a URL and secret the test names, as the providers' consoles
//! would be configured.

use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a callback got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReply {
    pub status: u16,
    pub body: String,
}

/// Unix time now, in ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// POSTs `body` to an `http://host:port/path?query` URL over a fresh
/// connection and reads the status and body. Enough HTTP/1.1 for loopback.
pub async fn post(url: &str, content_type: &str, body: &[u8]) -> std::io::Result<CallbackReply> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an http:// URL");
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(CallbackReply { status, body })
}

/// bbb-webhooks' checksum: `sha256(callbackURL + body + secret)`, appended
/// to the callback URL.
pub fn bbb_signed_url(callback_url: &str, body: &[u8], secret: &str) -> String {
    let mut input = callback_url.as_bytes().to_vec();
    input.extend_from_slice(body);
    input.extend_from_slice(secret.as_bytes());
    let checksum = hex::encode(Sha256::digest(&input));
    let sep = if callback_url.contains('?') { '&' } else { '?' };
    format!("{callback_url}{sep}checksum={checksum}")
}

/// Sends a bbb-webhooks event to each hook (those for `meeting_id` or for
/// every meeting), form-encoded as `event=…&timestamp=…&domain=…` and
/// signed with `secret`.
pub async fn bbb_deliver(
    hooks: Vec<crate::BbbHook>,
    secret: &str,
    meeting_id: &str,
    event: &Value,
) -> Vec<(String, std::io::Result<CallbackReply>)> {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("event", &event.to_string())
        .append_pair("timestamp", &unix_ms().to_string())
        .append_pair("domain", "127.0.0.1")
        .finish();
    let mut replies = Vec::new();
    for hook in hooks {
        if hook.meeting_id.as_deref().is_some_and(|m| m != meeting_id) {
            continue;
        }
        let url = bbb_signed_url(&hook.callback_url, body.as_bytes(), secret);
        let reply = post(&url, "application/x-www-form-urlencoded", body.as_bytes()).await;
        replies.push((hook.callback_url, reply));
    }
    replies
}

/// A bbb-webhooks `chat-group-message-sent` event in the public chat.
pub fn bbb_chat_event(meeting_id: &str, user_id: &str, user_name: &str, text: &str) -> Value {
    let now = unix_ms();
    json!([{ "data": {
        "type": "event",
        "id": "chat-group-message-sent",
        "attributes": {
            "meeting": { "internal-meeting-id": format!("int-{meeting_id}"), "external-meeting-id": meeting_id },
            "chat-message": {
                "id": format!("msg-{now}-{}", rand::random::<u32>()),
                "message": text,
                "sender": { "internal-user-id": format!("w_{user_id}"), "external-user-id": user_id, "name": user_name, "time": now }
            },
            "chat-id": "MAIN-PUBLIC-GROUP-CHAT"
        },
        "event": { "ts": now }
    }}])
}

/// A bbb-webhooks meeting event (`meeting-created`, `user-joined`, …).
pub fn bbb_meeting_event(id: &str, meeting_id: &str, user: Option<(&str, &str)>) -> Value {
    let mut attributes = json!({
        "meeting": { "internal-meeting-id": format!("int-{meeting_id}"), "external-meeting-id": meeting_id, "name": meeting_id }
    });
    if let Some((user_id, name)) = user {
        attributes["user"] = json!({ "internal-user-id": format!("w_{user_id}"), "external-user-id": user_id, "name": name });
    }
    json!([{ "data": { "type": "event", "id": id, "attributes": attributes, "event": { "ts": unix_ms() } } }])
}

/// Tencent's callback query for one command, signed with `token` at `request_time` (s).
pub fn tencent_callback_url(
    url: &str,
    sdkappid: u64,
    command: &str,
    token: &str,
    request_time: u64,
) -> String {
    let sign = hex::encode(Sha256::digest(format!("{token}{request_time}").as_bytes()));
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}SdkAppid={sdkappid}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI&Sign={sign}&RequestTime={request_time}"
    )
}

/// A `Group.CallbackAfterSendMsg` body with one text element.
pub fn tencent_group_message(group_id: &str, from: &str, seq: u64, text: &str) -> Value {
    json!({
        "CallbackCommand": "Group.CallbackAfterSendMsg",
        "GroupId": group_id,
        "Type": "AVChatRoom",
        "From_Account": from,
        "Operator_Account": from,
        "Random": rand::random::<u32>(),
        "MsgSeq": seq,
        "MsgTime": unix_ms() / 1000,
        "OnlineOnlyFlag": 0,
        "MsgBody": [{ "MsgType": "TIMTextElem", "MsgContent": { "Text": text } }],
        "EventTime": unix_ms()
    })
}

/// A `C2C.CallbackAfterSendMsg` body: `from` wrote `text` to `to`, one
/// text element, `MsgKey` as Tencent forms it (random, sequence, time).
pub fn tencent_c2c_message(from: &str, to: &str, seq: u64, text: &str) -> Value {
    let random = rand::random::<u32>();
    let time = unix_ms() / 1000;
    json!({
        "CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": from,
        "To_Account": to,
        "MsgSeq": seq,
        "MsgRandom": random,
        "MsgTime": time,
        "MsgKey": format!("{random}_{seq}_{time}"),
        "OnlineOnlyFlag": 0,
        "SendMsgResult": 0,
        "ErrorInfo": "send msg succeed",
        "MsgBody": [{ "MsgType": "TIMTextElem", "MsgContent": { "Text": text } }],
        "EventTime": unix_ms()
    })
}

/// An Easemob message callback, signed: `security = md5(callId + secret + timestamp)`.
/// `route` is (`chat_type`, `from`, `to`): `chat_type` is `chat`,
/// `groupchat` or `chatroom`.
pub fn easemob_message(
    appkey: &str,
    secret: &str,
    route: (&str, &str, &str),
    msg_id: &str,
    text: &str,
    timestamp_ms: u64,
) -> Value {
    let (chat_type, from, to) = route;
    let call_id = format!("{appkey}_{msg_id}");
    let security = hex::encode(Md5::digest(
        format!("{call_id}{secret}{timestamp_ms}").as_bytes(),
    ));
    json!({
        "callId": call_id,
        "eventType": "chat",
        "chat_type": chat_type,
        "timestamp": timestamp_ms,
        "security": security,
        "appkey": appkey,
        "host": "127.0.0.1",
        "from": from,
        "to": to,
        "msg_id": msg_id,
        "payload": { "bodies": [{ "type": "txt", "msg": text }], "ext": {} }
    })
}

/// A Bitrix24 `ONIMBOTMESSAGEADD` form body.
pub fn bitrix_bot_message(
    application_token: &str,
    dialog_id: &str,
    message_id: u64,
    from_user_id: &str,
    user_name: &str,
    text: &str,
    ts: u64,
) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("event", "ONIMBOTMESSAGEADD")
        .append_pair("data[BOT][1][BOT_ID]", "1")
        .append_pair("data[PARAMS][DIALOG_ID]", dialog_id)
        .append_pair("data[PARAMS][MESSAGE_ID]", &message_id.to_string())
        .append_pair("data[PARAMS][MESSAGE]", text)
        .append_pair("data[PARAMS][FROM_USER_ID]", from_user_id)
        .append_pair("data[USER][ID]", from_user_id)
        .append_pair("data[USER][NAME]", user_name)
        .append_pair("ts", &ts.to_string())
        .append_pair("auth[domain]", "portal.example")
        .append_pair("auth[application_token]", application_token)
        .finish()
}
