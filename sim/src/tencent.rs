//! Tencent Cloud Chat: `POST /v4/group_open_http_svc/send_broadcast_msg`,
//! `send_group_msg` for one group, and `POST /v4/openim/sendmsg` for one
//! user ("Sending One-to-One Messages to One User",
//! <https://www.tencentcloud.com/document/product/1047/34919>).
//!
//! The HTTP status is 200 for every answer the server itself gives; the
//! outcome is in `ActionStatus` / `ErrorCode` / `ErrorInfo`. Checks run in
//! this order (the first failure answers):
//!
//! | check | ErrorCode |
//! |---|---|
//! | query string undecodable, `random` missing or not a u32, `contenttype` not `json`, method not POST | 60002 |
//! | `sdkappid` missing or not a number | 60012 |
//! | `sdkappid` is not this app's | 70020 |
//! | `identifier` or `usersig` missing | 60004 |
//! | UserSig undecodable (base64/zlib/JSON/fields/`TLS.ver`) | 70003 |
//! | UserSig's `TLS.sdkappid` ≠ query `sdkappid` | 70014 |
//! | UserSig's `TLS.identifier` ≠ query `identifier` | 70013 |
//! | HMAC mismatch | 70009 |
//! | `TLS.time + TLS.expire` < now (real wall clock) | 70001 |
//! | identifier is not the app admin | 60010 |
//! | unknown command (other services: 60009) | 10003 |
//! | broadcast switch off in the console | 10007 |
//! | more than `rate_per_second` broadcasts, or 200 group messages, in any 1 s | 10023 (a violation) |
//! | body not JSON / not an object | 60003 |
//! | `Random`, `MsgBody` missing or invalid, unknown `MsgType`, MsgBody > 12,000 bytes | 10004 |
//! | group message: `GroupId` missing, empty, over 48 bytes or not printable ASCII | 10015 |
//! | group message: more than 40 in any 1 s to one group | 10023 (a violation) |
//! | one-to-one: more than 200 calls in any 1 s ("200 queries/sec") | 60007 (a violation) |
//! | one-to-one: body not JSON / not an object | 90001 |
//! | one-to-one: `To_Account` missing or not a string | 90003 |
//! | one-to-one: `MsgRandom` missing or not a u32 | 90005 |
//! | one-to-one: `MsgBody` not an array | 90007 |
//! | one-to-one: an element not in the message formats | 90002 |
//! | one-to-one: `MsgBody` over 12,000 bytes | 93000 |
//! | one-to-one: `SyncOtherMachine` not 1 or 2, `From_Account` not a string | 20001 |
//! | one-to-one: `To_Account` or `From_Account` not a UserID (1–32 bytes of printable ASCII) | 20003 |
//!
//! Any other documented code (a blocklisted sender's 20007, say) is
//! answered by injecting `Fault::ErrorAnswer` with that code.
//!
//! A call rejected after the rate check still used its slot, as a gateway
//! limit counts calls, not successes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::ZlibDecoder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::io::Read;

use crate::clock::{SlidingWindow, take_all, unix_ms, unix_secs};
use crate::codec::{first, parse_query};
use crate::config::REDACTED;
use crate::kind::{SimKind, keep_path, toml_str};
use crate::record::{SimDelivery, SimProvider, Target, escape_for_log};
use crate::server::{ConnHandle, Handled, ReqInfo, guarded, json, read_body};
use crate::sign::{tencent_hmac, tencent_sig_content};
use crate::{Shared, lock};

/// "If the content and random numbers of two messages within five minutes
/// are the same, the later message will be discarded as a repeated message."
const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// "The business can merge messages into one of up to 12,000 bytes", measured
/// here as the compact JSON (`serde_json::to_vec`) of the `MsgBody` array.
pub(crate) const MAX_MSG_BODY_BYTES: usize = 12_000;
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// `send_group_msg` takes 200 calls a second for the app ...
const GROUP_CALLS_PER_SECOND: u32 = 200;
/// ... and a group takes at most 40 messages a second (Use Limits).
const GROUP_MESSAGES_PER_SECOND: u32 = 40;
/// A UserSig is a few hundred bytes; anything inflating past this is hostile.
const MAX_USERSIG_JSON: u64 = 16 * 1024;
/// `openim/sendmsg`: "Maximum call frequency: 200 queries/sec".
const C2C_CALLS_PER_SECOND: u32 = 200;
/// A UserID: "1 to 32 bytes of printable ASCII (0x20–0x7e)".
const MAX_USER_ID_BYTES: usize = 32;

const MSG_TYPES: [&str; 8] = [
    "TIMTextElem",
    "TIMCustomElem",
    "TIMImageElem",
    "TIMFileElem",
    "TIMSoundElem",
    "TIMVideoFileElem",
    "TIMLocationElem",
    "TIMFaceElem",
];

pub(crate) struct TencentState {
    cfg: TencentConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    window: SlidingWindow,
    group_calls: SlidingWindow,
    c2c_calls: SlidingWindow,
    per_group: std::collections::HashMap<String, SlidingWindow>,
    recent: VecDeque<Sent>,
    msg_seq: u64,
    broadcast_enabled: bool,
}

struct Sent {
    group: Option<String>,
    random: u32,
    body: Value,
    at: Duration,
    msg_seq: u64,
}

impl TencentState {
    pub(crate) fn new(cfg: TencentConfig) -> Self {
        let inner = Inner {
            window: SlidingWindow::new(cfg.rate_per_second, Duration::from_secs(1)),
            group_calls: SlidingWindow::new(GROUP_CALLS_PER_SECOND, Duration::from_secs(1)),
            c2c_calls: SlidingWindow::new(C2C_CALLS_PER_SECOND, Duration::from_secs(1)),
            per_group: std::collections::HashMap::new(),
            recent: VecDeque::new(),
            msg_seq: 1000,
            broadcast_enabled: cfg.broadcast_enabled,
        };
        TencentState {
            cfg,
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn set_broadcast_enabled(&self, on: bool) {
        lock(&self.inner).broadcast_enabled = on;
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/v4/{service}/{command}", any(v4))
}

async fn v4(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let endpoint = path.strip_prefix("/v4/").unwrap_or_default().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let info = ReqInfo {
        provider: SimProvider::Tencent,
        endpoint: endpoint.clone(),
        method: method.to_string(),
        path,
    };
    let body = req.into_body();
    guarded(&s, info, conn, rate_limited, || async {
        handle(&s, &endpoint, &query, &method, body).await
    })
    .await
}

fn rate_limited() -> Response {
    fail_response(
        10023,
        "The frequency limit for message sending is reached. Try again later.",
    )
}

fn fail_response(code: u32, info: &str) -> Response {
    json(
        StatusCode::OK,
        &json!({"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}),
    )
}

fn fail(code: u32, info: impl AsRef<str>) -> Handled {
    Handled::rejected(fail_response(code, info.as_ref()), code.to_string())
}

async fn handle(s: &Shared, endpoint: &str, query: &str, method: &Method, body: Body) -> Handled {
    let cfg = &s.tencent().cfg;
    let Ok(params) = parse_query(query) else {
        return fail(60002, "HTTP parse error: malformed query string");
    };
    let q = |k: &str| first(&params, k).filter(|v| !v.is_empty());
    if method != Method::POST {
        return fail(60002, "HTTP parse error: REST API calls must be POST");
    }
    if q("contenttype").is_some_and(|c| c != "json") {
        return fail(60002, "HTTP parse error: contenttype must be json");
    }
    if q("random").and_then(|r| r.parse::<u32>().ok()).is_none() {
        return fail(
            60002,
            "HTTP parse error: random must be a 32-bit unsigned integer",
        );
    }
    let Some(sdkappid) = q("sdkappid").and_then(|a| a.parse::<u64>().ok()) else {
        return fail(60012, "REST API requires a numeric SDKAppID in the URL");
    };
    if sdkappid != cfg.sdkappid {
        return fail(70020, "SDKAppID not found: UserSig verification failed");
    }
    let (Some(identifier), Some(usersig)) = (q("identifier"), q("usersig")) else {
        return fail(60004, "identifier or usersig missing from the request URL");
    };
    if let Err(e) = verify_usersig(cfg, sdkappid, identifier, usersig, unix_secs()) {
        return fail(e.code(), e.info());
    }
    if identifier != cfg.identifier {
        return fail(60010, "The request requires app admin permissions");
    }
    if endpoint == crate::endpoints::TENCENT_SEND_C2C {
        return one_to_one(s, endpoint, body).await;
    }
    let to_group = endpoint == crate::endpoints::TENCENT_SEND_GROUP;
    if endpoint != crate::endpoints::TENCENT_SEND_BROADCAST && !to_group {
        return if endpoint.starts_with("group_open_http_svc/") {
            fail(10003, "Invalid command word")
        } else {
            fail(60009, "Request resource error: check the request URL")
        };
    }

    {
        let mut g = lock(&s.tencent().inner);
        if !g.broadcast_enabled && !to_group {
            return fail(
                10007,
                "Insufficient operation permissions: broadcast messaging of audio-video groups is not enabled in the console",
            );
        }
        let window = if to_group {
            &mut g.group_calls
        } else {
            &mut g.window
        };
        let taken = take_all(
            std::slice::from_mut(window),
            s.clock.now_for_limits(),
            s.clock.now(),
        );
        drop(g);
        if let Err(limit) = taken {
            s.violation(SimProvider::Tencent, endpoint, limit, "10023");
            return Handled::rejected(rate_limited(), "10023");
        }
    }

    let Ok(bytes) = read_body(body, MAX_REQUEST_BODY).await else {
        return fail(10004, "Invalid parameter: request body too large");
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(60003, "HTTP request JSON parse error");
    };
    let msg = match parse_message(&req) {
        Ok(m) => m,
        Err(e) => return fail(10004, format!("Invalid parameter: {e}")),
    };
    let group = if to_group {
        match req.get("GroupId").and_then(Value::as_str) {
            Some(id)
                if !id.is_empty()
                    && id.len() <= 48
                    && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
            {
                Some(id.to_owned())
            }
            _ => return fail(10015, "Invalid group ID"),
        }
    } else {
        None
    };

    let now = s.clock.now();
    let mut g = lock(&s.tencent().inner);
    if let Some(id) = &group {
        let window = g.per_group.entry(id.clone()).or_insert_with(|| {
            SlidingWindow::new(GROUP_MESSAGES_PER_SECOND, Duration::from_secs(1))
        });
        if let Err(limit) = take_all(std::slice::from_mut(window), s.clock.now_for_limits(), now) {
            drop(g);
            s.violation(
                SimProvider::Tencent,
                endpoint,
                format!("{limit} in group {id}"),
                "10023",
            );
            return Handled::rejected(rate_limited(), "10023");
        }
    }
    while g
        .recent
        .front()
        .is_some_and(|r| r.at.saturating_add(DEDUP_WINDOW) <= now)
    {
        g.recent.pop_front();
    }
    if let Some(orig) = g
        .recent
        .iter()
        .find(|r| r.group == group && r.random == msg.random && r.body == msg.body)
    {
        let seq = orig.msg_seq;
        drop(g);
        tracing::info!(
            target: "botbox_sim",
            "tencent  duplicate Random={} discarded (MsgSeq {seq})",
            msg.random
        );
        return Handled {
            response: ok_response(seq),
            outcome: crate::Outcome::Deduplicated,
        };
    }
    g.msg_seq += 1;
    let seq = g.msg_seq;
    g.recent.push_back(Sent {
        group: group.clone(),
        random: msg.random,
        body: msg.body.clone(),
        at: now,
        msg_seq: seq,
    });
    drop(g);

    let sender = msg.from.clone().unwrap_or_else(|| cfg.identifier.clone());
    let (target, shown) = match group {
        Some(id) => (Target::Group { id: id.clone() }, format!("group {id}")),
        None => (Target::AllAvChatRooms, "all-avchatrooms".to_owned()),
    };
    tracing::info!(
        target: "botbox_sim",
        "tencent  {} <{}> {}",
        escape_for_log(&shown, 64),
        escape_for_log(&sender, 64),
        escape_for_log(&summary(&msg.body), 200)
    );
    let mut content = Map::new();
    content.insert("Random".into(), json!(msg.random));
    content.insert("MsgBody".into(), msg.body);
    if let Some(c) = msg.cloud_custom_data {
        content.insert("CloudCustomData".into(), json!(c));
    }
    s.records.delivery(SimDelivery {
        seq: 0,
        provider: SimProvider::Tencent,
        endpoint: endpoint.to_owned(),
        target,
        sender: Some(sender),
        content: Value::Object(content),
        provider_id: seq.to_string(),
        at: now,
        unix_ms: unix_ms(),
    });
    Handled::delivered(ok_response(seq))
}

/// `openim/sendmsg`, after the checks every REST call shares: the app-wide
/// 200/s, the body, and the record of the message in the one-to-one
/// conversation. Tencent documents no five-minute dedup for `MsgRandom`,
/// so none is done.
async fn one_to_one(s: &Shared, endpoint: &str, body: Body) -> Handled {
    {
        let mut g = lock(&s.tencent().inner);
        let taken = take_all(
            std::slice::from_mut(&mut g.c2c_calls),
            s.clock.now_for_limits(),
            s.clock.now(),
        );
        drop(g);
        if let Err(limit) = taken {
            s.violation(SimProvider::Tencent, endpoint, limit, "60007");
            return fail(
                60007,
                "REST API call frequency exceeds the limit; reduce the request frequency",
            );
        }
    }
    let Ok(bytes) = read_body(body, MAX_REQUEST_BODY).await else {
        return fail(93000, "JSON data packet is too long");
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(
            90001,
            "Failed to parse the JSON format; check the request packet",
        );
    };
    let msg = match parse_one_to_one(&req) {
        Ok(m) => m,
        Err((code, info)) => return fail(code, info),
    };
    let cfg = &s.tencent().cfg;
    let now = s.clock.now();
    let msg_time = unix_secs();
    let seq = {
        let mut g = lock(&s.tencent().inner);
        g.msg_seq += 1;
        g.msg_seq
    };
    // "89541_2574206_1572870301" in the page's sample: random, sequence, time.
    let key = format!("{}_{seq}_{msg_time}", msg.random);
    let sender = msg.from.clone().unwrap_or_else(|| cfg.identifier.clone());
    tracing::info!(
        target: "botbox_sim",
        "tencent  user {} <{}> {}",
        escape_for_log(&msg.to, 64),
        escape_for_log(&sender, 64),
        escape_for_log(&summary(&msg.body), 200)
    );
    let mut content = Map::new();
    content.insert("MsgRandom".into(), json!(msg.random));
    content.insert("SyncOtherMachine".into(), json!(msg.sync_other_machine));
    content.insert("MsgBody".into(), msg.body);
    if let Some(c) = msg.cloud_custom_data {
        content.insert("CloudCustomData".into(), json!(c));
    }
    if let Some(f) = msg.forbid_callback_control {
        content.insert("ForbidCallbackControl".into(), f);
    }
    s.records.delivery(SimDelivery {
        seq: 0,
        provider: SimProvider::Tencent,
        endpoint: endpoint.to_owned(),
        target: Target::Account { id: msg.to },
        sender: Some(sender),
        content: Value::Object(content),
        provider_id: key.clone(),
        at: now,
        unix_ms: unix_ms(),
    });
    Handled::delivered(json(
        StatusCode::OK,
        &json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, "MsgTime": msg_time, "MsgKey": key}),
    ))
}

struct OneToOne {
    to: String,
    from: Option<String>,
    random: u32,
    sync_other_machine: u64,
    body: Value,
    cloud_custom_data: Option<String>,
    forbid_callback_control: Option<Value>,
}

fn is_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_BYTES
        && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The body of `openim/sendmsg`, or the code and words Tencent answers.
fn parse_one_to_one(req: &Map<String, Value>) -> Result<OneToOne, (u32, String)> {
    let to = match req.get("To_Account") {
        Some(Value::String(to)) => to.clone(),
        _ => return Err((90003, "To_Account is missing or is not a string".into())),
    };
    let random = req
        .get("MsgRandom")
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok())
        .ok_or((90005, "MsgRandom is missing or is not an integer".into()))?;
    let body = match req.get("MsgBody") {
        Some(b @ Value::Array(_)) => b.clone(),
        _ => return Err((90007, "MsgBody is not an array".into())),
    };
    let elems = body.as_array().map(Vec::as_slice).unwrap_or_default();
    if elems.is_empty() {
        return Err((90002, "MsgBody must not be empty".into()));
    }
    for (i, e) in elems.iter().enumerate() {
        check_elem(e).map_err(|m| (90002, format!("MsgBody[{i}]: {m}")))?;
    }
    let size = serde_json::to_vec(&body)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_MSG_BODY_BYTES {
        return Err((
            93000,
            format!("JSON data packet is too long: MsgBody is {size} bytes"),
        ));
    }
    let sync_other_machine = match req.get("SyncOtherMachine") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n @ (1 | 2)) => n,
            _ => return Err((20001, "SyncOtherMachine must be 1 or 2".into())),
        },
    };
    let from = match req.get("From_Account") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f.is_empty() => None,
        Some(Value::String(f)) => Some(f.clone()),
        Some(_) => return Err((20001, "From_Account must be a string".into())),
    };
    if !is_user_id(&to) || from.as_deref().is_some_and(|f| !is_user_id(f)) {
        return Err((
            20003,
            "The UserID of the sender or recipient is invalid or does not exist".into(),
        ));
    }
    let cloud_custom_data = match req.get("CloudCustomData") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => return Err((90010, "CloudCustomData must be a string".into())),
    };
    Ok(OneToOne {
        to,
        from,
        random,
        sync_other_machine,
        body,
        cloud_custom_data,
        forbid_callback_control: req.get("ForbidCallbackControl").cloned(),
    })
}

fn ok_response(seq: u64) -> Response {
    json(
        StatusCode::OK,
        &json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, "MsgSeq": seq}),
    )
}

struct Message {
    random: u32,
    body: Value,
    from: Option<String>,
    cloud_custom_data: Option<String>,
}

fn parse_message(req: &Map<String, Value>) -> Result<Message, String> {
    let random = match req.get("Random") {
        None => return Err("Random is required".into()),
        Some(v) => v
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or("Random must be a 32-bit unsigned integer")?,
    };
    let Some(body) = req.get("MsgBody") else {
        return Err("MsgBody is required".into());
    };
    let elems = body.as_array().ok_or("MsgBody must be an array")?;
    if elems.is_empty() {
        return Err("MsgBody must not be empty".into());
    }
    for (i, e) in elems.iter().enumerate() {
        check_elem(e).map_err(|m| format!("MsgBody[{i}]: {m}"))?;
    }
    let size = serde_json::to_vec(body)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_MSG_BODY_BYTES {
        return Err(format!(
            "MsgBody is {size} bytes, more than {MAX_MSG_BODY_BYTES}"
        ));
    }
    let from = match req.get("From_Account") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("From_Account must be a string".into()),
    };
    let cloud_custom_data = match req.get("CloudCustomData") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("CloudCustomData must be a string".into()),
    };
    Ok(Message {
        random,
        body: body.clone(),
        from,
        cloud_custom_data,
    })
}

/// The fields each element type needs (Tencent's "Message Formats"); extra
/// fields are allowed, as the server ignores what it does not know.
fn check_elem(e: &Value) -> Result<(), String> {
    let obj = e.as_object().ok_or("element must be an object")?;
    let ty = obj
        .get("MsgType")
        .and_then(Value::as_str)
        .ok_or("MsgType must be a string")?;
    if !MSG_TYPES.contains(&ty) {
        return Err(format!("unknown MsgType {}", escape_for_log(ty, 40)));
    }
    let c = obj
        .get("MsgContent")
        .and_then(Value::as_object)
        .ok_or("MsgContent must be an object")?;
    let s = |k: &str| c.get(k).is_some_and(Value::is_string);
    let opt_s = |k: &str| c.get(k).is_none_or(Value::is_string);
    let n = |k: &str| c.get(k).is_some_and(Value::is_number);
    let int = |k: &str| c.get(k).is_some_and(|v| v.is_u64() || v.is_i64());
    let (ok, need) = match ty {
        "TIMTextElem" => (s("Text"), "Text (string)"),
        "TIMCustomElem" => (
            s("Data") && opt_s("Desc") && opt_s("Ext") && opt_s("Sound"),
            "Data (string); Desc, Ext, Sound optional strings",
        ),
        "TIMLocationElem" => (
            s("Desc") && n("Latitude") && n("Longitude"),
            "Desc (string), Latitude and Longitude (numbers)",
        ),
        "TIMFaceElem" => (int("Index") && opt_s("Data"), "Index (integer)"),
        "TIMImageElem" => (
            s("UUID") && int("ImageFormat") && c.get("ImageInfoArray").is_some_and(Value::is_array),
            "UUID, ImageFormat and ImageInfoArray",
        ),
        "TIMSoundElem" => (s("Url") && n("Second"), "Url (string) and Second (number)"),
        "TIMFileElem" => (s("Url") && s("FileName"), "Url and FileName (strings)"),
        "TIMVideoFileElem" => (
            s("VideoUrl") && s("ThumbUrl") && n("VideoSecond"),
            "VideoUrl, ThumbUrl (strings) and VideoSecond (number)",
        ),
        _ => (false, "a known MsgType"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{ty} needs {need}"))
    }
}

fn summary(body: &Value) -> String {
    body.as_array()
        .map(|elems| {
            elems
                .iter()
                .map(|e| {
                    let ty = e.get("MsgType").and_then(Value::as_str).unwrap_or("?");
                    match ty {
                        "TIMTextElem" => e
                            .pointer("/MsgContent/Text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        "TIMCustomElem" => format!(
                            "[custom {}]",
                            e.pointer("/MsgContent/Data")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                        ),
                        other => format!("[{other}]"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// Why a UserSig was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UserSigError {
    #[error("UserSig is malformed: {0}")]
    Malformed(&'static str),
    #[error("the SDKAppID in the request does not match the one in the UserSig")]
    SdkAppIdMismatch,
    #[error("the identifier in the request does not match the one in the UserSig")]
    IdentifierMismatch,
    #[error("UserSig verification failed")]
    BadSignature,
    #[error("UserSig has expired")]
    Expired,
}

impl UserSigError {
    fn code(&self) -> u32 {
        match self {
            UserSigError::Malformed(_) => 70003,
            UserSigError::SdkAppIdMismatch => 70014,
            UserSigError::IdentifierMismatch => 70013,
            UserSigError::BadSignature => 70009,
            UserSigError::Expired => 70001,
        }
    }
    fn info(&self) -> String {
        self.to_string()
    }
}

/// TLSSigAPIv2 verification: undo Tencent's base64 alphabet, inflate, parse,
/// recompute the HMAC over the documented lines and compare.
pub(crate) fn verify_usersig(
    cfg: &TencentConfig,
    sdkappid: u64,
    identifier: &str,
    usersig: &str,
    now_unix: u64,
) -> Result<(), UserSigError> {
    use UserSigError::Malformed;
    let b64 = usersig
        .replace('*', "+")
        .replace('-', "/")
        .replace('_', "=");
    let compressed = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| Malformed("not base64"))?;
    let mut json_bytes = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_USERSIG_JSON)
        .read_to_end(&mut json_bytes)
        .map_err(|_| Malformed("not zlib"))?;
    let doc: Map<String, Value> =
        serde_json::from_slice(&json_bytes).map_err(|_| Malformed("not a JSON object"))?;
    if doc.get("TLS.ver").and_then(Value::as_str) != Some("2.0") {
        return Err(Malformed("TLS.ver is not 2.0"));
    }
    let sig_identifier = doc
        .get("TLS.identifier")
        .and_then(Value::as_str)
        .ok_or(Malformed("TLS.identifier missing"))?;
    let sig_appid = doc
        .get("TLS.sdkappid")
        .and_then(Value::as_u64)
        .ok_or(Malformed("TLS.sdkappid missing"))?;
    let time = doc
        .get("TLS.time")
        .and_then(Value::as_u64)
        .ok_or(Malformed("TLS.time missing"))?;
    let expire = doc
        .get("TLS.expire")
        .and_then(Value::as_u64)
        .ok_or(Malformed("TLS.expire missing"))?;
    let sig = doc
        .get("TLS.sig")
        .and_then(Value::as_str)
        .ok_or(Malformed("TLS.sig missing"))?;
    let userbuf = match doc.get("TLS.userbuf") {
        None => None,
        Some(v) => Some(v.as_str().ok_or(Malformed("TLS.userbuf is not a string"))?),
    };
    if sig_appid != sdkappid {
        return Err(UserSigError::SdkAppIdMismatch);
    }
    if sig_identifier != identifier {
        return Err(UserSigError::IdentifierMismatch);
    }
    let expected = tencent_hmac(
        &cfg.secret_key,
        &tencent_sig_content(sig_identifier, sig_appid, time, expire, userbuf),
    );
    if expected.is_empty() || expected != sig {
        return Err(UserSigError::BadSignature);
    }
    if time.saturating_add(expire) < now_unix {
        return Err(UserSigError::Expired);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// What this simulator is configured with (`SimConfig.tencent`).

/// The Tencent Cloud Chat simulator's config.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TencentConfig {
    pub sdkappid: u64,
    /// The app admin account allowed to call the REST API.
    pub identifier: String,
    /// The app's secret key; UserSigs are HMAC-SHA256 keyed with its text bytes.
    pub secret_key: String,
    /// `send_broadcast_msg` calls allowed per second (1 by default, 5 on higher plans).
    pub rate_per_second: u32,
    /// The console switch "Broadcast messaging of audio-video group"; off gives 10007.
    pub broadcast_enabled: bool,
}

impl Default for TencentConfig {
    fn default() -> Self {
        TencentConfig {
            sdkappid: 1_400_900_001,
            identifier: "administrator".to_owned(),
            secret_key: "sim-tencent-key-5e2b9d4c1a7f60e3b8d2c4a1f9e07b6d".to_owned(),
            rate_per_second: 1,
            broadcast_enabled: true,
        }
    }
}

impl fmt::Debug for TencentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentConfig")
            .field("sdkappid", &self.sdkappid)
            .field("identifier", &self.identifier)
            .field("secret_key", &REDACTED)
            .field("rate_per_second", &self.rate_per_second)
            .field("broadcast_enabled", &self.broadcast_enabled)
            .finish()
    }
}

/// The Tencent Cloud Chat simulator, for [`crate::kind::KINDS`].
pub(crate) const KIND: SimKind = SimKind {
    provider: SimProvider::Tencent,
    section_name: "tencent",
    base_path: "",
    port: |p| &mut p.tencent,
    validate: |cfg| {
        if cfg.tencent.rate_per_second == 0 {
            return Err("tencent.rate_per_second must be at least 1");
        }
        Ok(())
    },
    state: |cfg, _, _| Box::new(TencentState::new(cfg.tencent.clone())),
    router,
    unrouted_path: keep_path,
    text: |content| {
        let texts: Vec<&str> = content
            .get("MsgBody")?
            .as_array()?
            .iter()
            .filter(|e| e.get("MsgType").and_then(Value::as_str) == Some("TIMTextElem"))
            .filter_map(|e| e.get("MsgContent")?.get("Text")?.as_str())
            .collect();
        (!texts.is_empty()).then(|| texts.join("\n"))
    },
    section: |cfg, name, url, secret| {
        let c = &cfg.tencent;
        format!(
            "[providers.{name}]\nkind = \"tencent\"\nurl = {}\nsdkappid = {}\nidentifier = {}\nsecret_key = {}\n",
            toml_str(url),
            c.sdkappid,
            toml_str(&c.identifier),
            secret("tencent-secret-key", &c.secret_key)
        )
    },
    credentials: |cfg| vec![cfg.tencent.secret_key.clone()],
    error_answer,
};

/// Tencent answers every error with HTTP 200 and the code in the body; a
/// code that is not a number is answered as it is, as a string.
fn error_answer(code: &str, status: Option<u16>, info: &str) -> Response {
    let status = status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let code = code
        .parse::<i64>()
        .map_or_else(|_| json!(code), |n| json!(n));
    json(
        status,
        &json!({"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}),
    )
}

impl Shared {
    pub(crate) fn tencent(&self) -> &TencentState {
        self.state()
    }
}

/// What the [`Sim`](crate::Sim) handle offers for this simulator alone.
impl crate::Sim {
    /// Tencent requests answered OK but discarded as repeats of a `Random`.
    pub fn deduplicated(&self) -> u64 {
        self.stats(SimProvider::Tencent).deduplicated
    }
    /// `http://127.0.0.1:P`
    pub fn tencent_url(&self) -> String {
        self.url(SimProvider::Tencent)
    }
    /// The console switch for AVChatRoom broadcasts (off: ErrorCode 10007).
    pub fn tencent_set_broadcast_enabled(&self, on: bool) {
        self.shared.tencent().set_broadcast_enabled(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{tencent_pack, tencent_usersig};

    fn cfg() -> TencentConfig {
        TencentConfig::default()
    }

    #[test]
    fn usersig_round_trips_and_forgeries_fail() {
        let c = cfg();
        let now = 1_800_000_000;
        let good = tencent_usersig(c.sdkappid, &c.identifier, &c.secret_key, now - 10, 86400);
        assert_eq!(
            verify_usersig(&c, c.sdkappid, &c.identifier, &good, now),
            Ok(())
        );
        let expired = tencent_usersig(c.sdkappid, &c.identifier, &c.secret_key, now - 100, 50);
        assert_eq!(
            verify_usersig(&c, c.sdkappid, &c.identifier, &expired, now),
            Err(UserSigError::Expired)
        );
        let wrong_key = tencent_usersig(c.sdkappid, &c.identifier, "other", now, 86400);
        assert_eq!(
            verify_usersig(&c, c.sdkappid, &c.identifier, &wrong_key, now),
            Err(UserSigError::BadSignature)
        );
        let other_user = tencent_usersig(c.sdkappid, "bob", &c.secret_key, now, 86400);
        assert_eq!(
            verify_usersig(&c, c.sdkappid, &c.identifier, &other_user, now),
            Err(UserSigError::IdentifierMismatch)
        );
        let other_app = tencent_usersig(c.sdkappid + 1, &c.identifier, &c.secret_key, now, 86400);
        assert_eq!(
            verify_usersig(&c, c.sdkappid, &c.identifier, &other_app, now),
            Err(UserSigError::SdkAppIdMismatch)
        );
        for junk in [
            "",
            "%%%",
            "abcd",
            &tencent_pack("[1,2]"),
            &tencent_pack(r#"{"TLS.ver":"1.0"}"#),
        ] {
            assert!(matches!(
                verify_usersig(&c, c.sdkappid, &c.identifier, junk, now),
                Err(UserSigError::Malformed(_))
            ));
        }
    }

    #[test]
    fn message_validation() {
        let ok = json!({"Random": 1, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}]});
        assert!(parse_message(ok.as_object().unwrap_or(&Map::new())).is_ok());
        for bad in [
            json!({"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}]}),
            json!({"Random": 1}),
            json!({"Random": 1, "MsgBody": []}),
            json!({"Random": 4_294_967_296u64, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}]}),
            json!({"Random": 1, "MsgBody": [{"MsgType": "TIMBogusElem", "MsgContent": {}}]}),
            json!({"Random": 1, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": 5}}]}),
            json!({"Random": 1, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x".repeat(12_000)}}]}),
        ] {
            assert!(
                parse_message(bad.as_object().unwrap_or(&Map::new())).is_err(),
                "{bad}"
            );
        }
    }
}
