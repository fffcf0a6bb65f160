//! Easemob (环信) IM: the app token endpoint, the three global broadcast
//! endpoints, with their documented per-window limits (429) and daily quotas
//! (403), and the message APIs for chat rooms, groups and users that
//! replies use (`to`, `type`, `body`; 100, 20 and 100 calls a second).
//!
//! Errors are JSON `{"error", "exception", "timestamp", "duration",
//! "error_description"}` with the HTTP status carrying the class. Broadcast
//! checks run in this order:
//!
//! | check | status | error | error_description |
//! |---|---|---|---|
//! | not POST | 405 | `method_not_allowed` | … |
//! | org/app not this app's | 400 | `organization_application_not_found` | Could not find application for {org}/{app} from URI: … |
//! | no / unknown bearer token | 401 | `unauthorized` | Unable to authenticate (OAuth) |
//! | expired bearer token | 401 | `unauthorized` | Unable to authenticate due to expired access token |
//! | broadcasts not opened | 403 | `forbidden_op` | message broadcast service is unopened |
//! | over a window (all: 1/30 min; online: 1/min; rooms: 1/s and 10/min) | 429 | `reach_limit` | This request has reached api limit |
//! | body over 64 KiB | 413 | `request_entity_too_large` | … |
//! | body not a JSON object, `msg` / `msg.type` / type fields wrong, `from` not a string, bad `chatroom_msg_level` | 400 | `invalid_request_body` | Request body is invalid. Please check body is correct. |
//! | all users: `target_type` absent | 400 | `illegal_argument` | target_type must be provided |
//! | all users: `target_type` ≠ "users" | 400 | `illegal_argument` | target_type can only be 'users' |
//! | `from` is "" | 400 | `illegal_argument` | from can't be empty |
//! | `ext` present but not an object (null included) | 400 | `illegal_argument` | ext must be JSONObject |
//! | daily quota (3 / 50 / 100) used up | 403 | `forbidden_op` | broadcast message limit exceeded / online user broadcast limit exceeded / chatroom broadcast limit exceeded |
//!
//! Every authenticated request counts against the windows; only accepted
//! broadcasts count against the daily quota. "Per day" is the calendar day
//! in the zone `daily_utc_offset_minutes` (default UTC, as Easemob counts it:
//! "API 限流周期按照 UTC 时间计算", limitationapi), or unset any rolling 24 h.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::clock::{CalendarDay, SimClock, SlidingWindow, take_all, unix_ms};
use crate::config::REDACTED;
use crate::kind::{SimKind, keep_path, toml_str};
use crate::record::{SimDelivery, SimProvider, Target, escape_for_log};
use crate::server::{ConnHandle, Handled, ReqInfo, guarded, json, read_body};
use crate::{Shared, lock};

const MAX_TOKEN_BODY: usize = 16 * 1024;
const MAX_BROADCAST_BODY: usize = 64 * 1024;
const DAY: Duration = Duration::from_secs(86_400);
const MSG_TYPES: [&str; 8] = [
    "txt", "img", "audio", "video", "file", "loc", "cmd", "custom",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AllUsers,
    OnlineUsers,
    ChatRooms,
}

impl Kind {
    fn from_endpoint(e: &str) -> Option<Kind> {
        match e {
            crate::endpoints::EASEMOB_ALL_USERS => Some(Kind::AllUsers),
            crate::endpoints::EASEMOB_ONLINE_USERS => Some(Kind::OnlineUsers),
            crate::endpoints::EASEMOB_CHATROOMS => Some(Kind::ChatRooms),
            _ => None,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
    fn quota_message(self) -> &'static str {
        match self {
            Kind::AllUsers => "broadcast message limit exceeded",
            Kind::OnlineUsers => "online user broadcast limit exceeded",
            Kind::ChatRooms => "chatroom broadcast limit exceeded",
        }
    }
}

pub(crate) struct EasemobState {
    cfg: EasemobConfig,
    base_url: OnceLock<String>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// token → simulated expiry instant
    tokens: HashMap<String, Duration>,
    /// Calls a second (and for users, messages a minute) per message API.
    message_windows: [Vec<SlidingWindow>; 3],
    /// Messages a second per chat room, past which the room drops some.
    per_room: HashMap<String, SlidingWindow>,
    windows: [Vec<SlidingWindow>; 3],
    daily: [Daily; 3],
    next_id: u64,
    broadcast_enabled: bool,
}

impl EasemobState {
    pub(crate) fn new(cfg: EasemobConfig, base_url: String) -> Self {
        let min = |n: u64| Duration::from_secs(60 * n);
        let inner = Inner {
            tokens: HashMap::new(),
            message_windows: [
                vec![SlidingWindow::new(100, Duration::from_secs(1))],
                vec![SlidingWindow::new(20, Duration::from_secs(1))],
                vec![
                    SlidingWindow::new(100, Duration::from_secs(1)),
                    SlidingWindow::new(6000, min(1)),
                ],
            ],
            per_room: HashMap::new(),
            windows: [
                vec![SlidingWindow::new(1, min(30))],
                vec![SlidingWindow::new(1, min(1))],
                vec![
                    SlidingWindow::new(1, Duration::from_secs(1)),
                    SlidingWindow::new(10, min(1)),
                ],
            ],
            daily: [
                Daily::new(cfg.daily_all_users, cfg.daily_utc_offset_minutes),
                Daily::new(cfg.daily_online_users, cfg.daily_utc_offset_minutes),
                Daily::new(cfg.daily_chatrooms, cfg.daily_utc_offset_minutes),
            ],
            next_id: 1_365_344_904_091_349_000,
            broadcast_enabled: cfg.broadcast_enabled,
        };
        let url = OnceLock::new();
        let _ = url.set(base_url);
        EasemobState {
            cfg,
            base_url: url,
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn set_broadcast_enabled(&self, on: bool) {
        lock(&self.inner).broadcast_enabled = on;
    }

    pub(crate) fn expire_tokens(&self, clock: &SimClock) {
        let now = clock.now();
        for exp in lock(&self.inner).tokens.values_mut() {
            *exp = now;
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/{org}/{app}/token", any(entry))
        .route("/{org}/{app}/messages/broadcast", any(entry))
        .route("/{org}/{app}/messages/users/broadcast", any(entry))
        .route("/{org}/{app}/messages/chatrooms/broadcast", any(entry))
        .route("/{org}/{app}/messages/chatrooms", any(entry))
        .route("/{org}/{app}/messages/chatgroups", any(entry))
        .route("/{org}/{app}/messages/users", any(entry))
}

async fn entry(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let org = parts.next().unwrap_or_default().to_owned();
    let app = parts.next().unwrap_or_default().to_owned();
    let endpoint = parts.next().unwrap_or_default().to_owned();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let info = ReqInfo {
        provider: SimProvider::Easemob,
        endpoint: endpoint.clone(),
        method: method.to_string(),
        path: path.clone(),
    };
    let body = req.into_body();
    guarded(&s, info, conn, rate_limited, || async {
        if method != Method::POST {
            return err(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Request method not supported; use POST",
            );
        }
        if org != s.easemob().cfg.org || app != s.easemob().cfg.app {
            return err(
                StatusCode::BAD_REQUEST,
                "organization_application_not_found",
                &format!(
                    "Could not find application for {org}/{app} from URI: {}",
                    path.trim_start_matches('/')
                ),
            );
        }
        if let Some(kind) = Conversation::from_endpoint(&endpoint) {
            return message(&s, kind, &endpoint, &headers, body).await;
        }
        match Kind::from_endpoint(&endpoint) {
            None => token(&s, body).await,
            Some(kind) => broadcast(&s, kind, &endpoint, &headers, body).await,
        }
    })
    .await
}

fn error_body(status: StatusCode, error: &str, description: &str) -> Response {
    let exception = match error {
        "unauthorized" => "EasemobSecurityException",
        "forbidden_op" => "EasemobForbiddenOpException",
        "reach_limit" => "EasemobRateLimitException",
        "illegal_argument" => "java.lang.IllegalArgumentException",
        "invalid_grant" => "EasemobInvalidGrantException",
        _ => "EasemobBadRequestException",
    };
    json(
        status,
        &json!({
            "error": error,
            "exception": exception,
            "timestamp": unix_ms(),
            "duration": 0,
            "error_description": description,
        }),
    )
}

fn err(status: StatusCode, error: &str, description: &str) -> Handled {
    Handled::rejected(error_body(status, error, description), error)
}

fn rate_limited() -> Response {
    error_body(
        StatusCode::TOO_MANY_REQUESTS,
        "reach_limit",
        "This request has reached api limit",
    )
}

/// A request body that must be one JSON object of at most 64 KiB.
async fn json_object(body: Body) -> Result<Map<String, Value>, Handled> {
    let Ok(bytes) = read_body(body, MAX_BROADCAST_BODY).await else {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_entity_too_large",
            "Request entity too large",
        ));
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(req)) => Ok(req),
        _ => Err(invalid_body()),
    }
}

fn invalid_body() -> Handled {
    err(
        StatusCode::BAD_REQUEST,
        "invalid_request_body",
        "Request body is invalid. Please check body is correct.",
    )
}

async fn token(s: &Shared, body: Body) -> Handled {
    s.records.token_fetch(SimProvider::Easemob);
    let cfg = &s.easemob().cfg;
    let Ok(bytes) = read_body(body, MAX_TOKEN_BODY).await else {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_entity_too_large",
            "Request entity too large",
        );
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&bytes) else {
        return err(
            StatusCode::BAD_REQUEST,
            "json_parse",
            "Unexpected content: the request body must be a JSON object",
        );
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str);
    if field("grant_type") != Some("client_credentials") {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "grant_type must be client_credentials",
        );
    }
    if field("client_id") != Some(cfg.client_id.as_str())
        || field("client_secret") != Some(cfg.client_secret.as_str())
    {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid client_id or client_secret",
        );
    }
    let ttl = req
        .get("ttl")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
        .unwrap_or(cfg.token_ttl_secs);
    let mut raw = [0u8; 30];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("YWMt{}", URL_SAFE_NO_PAD.encode(raw));
    let now = s.clock.now();
    {
        let mut g = lock(&s.easemob().inner);
        g.tokens.retain(|_, exp| *exp > now);
        g.tokens
            .insert(token.clone(), now.saturating_add(Duration::from_secs(ttl)));
    }
    tracing::info!(target: "botbox_sim", "easemob  issued app token (expires_in {ttl} s simulated)");
    Handled::ok(json(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": ttl, "application": cfg.application}),
    ))
}

async fn broadcast(
    s: &Shared,
    kind: Kind,
    endpoint: &str,
    headers: &HeaderMap,
    body: Body,
) -> Handled {
    let now = s.clock.now();
    if let Some(refused) = unauthorized(s, headers) {
        return refused;
    }
    {
        let mut g = lock(&s.easemob().inner);
        if !g.broadcast_enabled {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden_op",
                "message broadcast service is unopened",
            );
        }
        let taken = take_all(&mut g.windows[kind.index()], s.clock.now_for_limits(), now);
        drop(g);
        if let Err(limit) = taken {
            s.violation(SimProvider::Easemob, endpoint, limit, "429");
            return Handled::rejected(rate_limited(), "reach_limit");
        }
    }

    let req = match json_object(body).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let parsed = match validate(kind, &req) {
        Ok(p) => p,
        Err((error, description)) => return err(StatusCode::BAD_REQUEST, error, description),
    };

    let mut g = lock(&s.easemob().inner);
    let check_at = s.clock.now_for_limits();
    let daily = &mut g.daily[kind.index()];
    let allowed = match daily {
        Daily::Rolling(w) => w.allows(check_at),
        // A request up to the tolerance early counts on the later day.
        Daily::Calendar(d) => d.allows(s.clock.calendar_ms(check_at)),
    };
    if !allowed {
        let limit = match daily {
            Daily::Rolling(w) => w.describe(),
            Daily::Calendar(d) => d.describe(),
        };
        drop(g);
        s.violation(SimProvider::Easemob, endpoint, limit, "403");
        return err(StatusCode::FORBIDDEN, "forbidden_op", kind.quota_message());
    }
    match daily {
        Daily::Rolling(w) => w.record(now),
        Daily::Calendar(d) => d.record(s.clock.calendar_ms(check_at)),
    }
    g.next_id += 1;
    let id = g.next_id;
    drop(g);

    let target = match kind {
        Kind::AllUsers => Target::AllUsers,
        Kind::OnlineUsers => Target::OnlineUsers,
        Kind::ChatRooms => Target::ActiveChatRooms {
            level: parsed.level.clone(),
        },
    };
    tracing::info!(
        target: "botbox_sim",
        "easemob  {} <{}> {}",
        endpoint,
        escape_for_log(&parsed.from, 64),
        escape_for_log(&summary(&parsed.msg), 200)
    );
    let mut content = Map::new();
    content.insert("msg".into(), parsed.msg);
    if let Some(ext) = parsed.ext {
        content.insert("ext".into(), ext);
    }
    s.records.delivery(SimDelivery {
        seq: 0,
        provider: SimProvider::Easemob,
        endpoint: endpoint.to_owned(),
        target,
        sender: Some(parsed.from),
        content: Value::Object(content),
        provider_id: id.to_string(),
        at: now,
        unix_ms: unix_ms(),
    });
    Handled::delivered(ok_response(s, endpoint, json!({"id": id})))
}

/// Checks the bearer token: the 401 to answer, unless it is one this app
/// issued and it has not expired.
fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Handled> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let now = s.clock.now();
    let g = lock(&s.easemob().inner);
    match bearer.and_then(|t| g.tokens.get(t)) {
        None => Some(err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate (OAuth)",
        )),
        Some(exp) if *exp <= now => Some(err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate due to expired access token",
        )),
        Some(_) => None,
    }
}

/// The conversations the message APIs reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conversation {
    Room,
    Group,
    User,
}

impl Conversation {
    fn from_endpoint(e: &str) -> Option<Conversation> {
        match e {
            crate::endpoints::EASEMOB_ROOM_MESSAGES => Some(Conversation::Room),
            crate::endpoints::EASEMOB_GROUP_MESSAGES => Some(Conversation::Group),
            crate::endpoints::EASEMOB_USER_MESSAGES => Some(Conversation::User),
            _ => None,
        }
    }

    /// How many conversations one call may name: 10 rooms, 3 groups, 600 users.
    fn max_to(self) -> usize {
        match self {
            Conversation::Room => 10,
            Conversation::Group => 3,
            Conversation::User => 600,
        }
    }
}

/// One message into rooms, groups or users (`POST /messages/chatrooms`,
/// `/messages/chatgroups`, `/messages/users`).
async fn message(
    s: &Shared,
    kind: Conversation,
    endpoint: &str,
    headers: &HeaderMap,
    body: Body,
) -> Handled {
    if let Some(refused) = unauthorized(s, headers) {
        return refused;
    }
    let now = s.clock.now();
    {
        let mut g = lock(&s.easemob().inner);
        let taken = take_all(
            &mut g.message_windows[kind as usize],
            s.clock.now_for_limits(),
            now,
        );
        drop(g);
        if let Err(limit) = taken {
            s.violation(SimProvider::Easemob, endpoint, limit, "429");
            return Handled::rejected(rate_limited(), "reach_limit");
        }
    }
    let req = match json_object(body).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let from = match req.get("from") {
        None => "admin".to_owned(),
        Some(Value::String(f)) if f.is_empty() => {
            return err(
                StatusCode::BAD_REQUEST,
                "illegal_argument",
                "from can't be empty",
            );
        }
        Some(Value::String(f)) => f.clone(),
        Some(_) => return invalid_body(),
    };
    let to: Vec<String> = match req.get("to").and_then(Value::as_array) {
        Some(list) if !list.is_empty() && list.len() <= kind.max_to() => {
            match list
                .iter()
                .map(|v| v.as_str().filter(|t| !t.is_empty()))
                .collect::<Option<Vec<_>>>()
            {
                Some(ids) => ids.into_iter().map(str::to_owned).collect(),
                None => return invalid_body(),
            }
        }
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "illegal_argument",
                "to must be a non-empty list of conversation ids",
            );
        }
    };
    let ext = match req.get("ext") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "illegal_argument",
                "ext must be JSONObject",
            );
        }
    };
    // `type` + `body` carry what a broadcast's `msg` carries.
    let mut msg = match req.get("body") {
        Some(Value::Object(b)) => b.clone(),
        _ => return invalid_body(),
    };
    match req.get("type") {
        Some(t @ Value::String(_)) => {
            msg.insert("type".into(), t.clone());
        }
        _ => return invalid_body(),
    }
    let msg = Value::Object(msg);
    if check_msg(&msg).is_err() {
        return invalid_body();
    }
    let level = match (kind, req.get("chatroom_msg_level")) {
        (_, None) => "normal".to_owned(),
        (Conversation::Room, Some(Value::String(l)))
            if ["high", "normal", "low"].contains(&l.as_str()) =>
        {
            l.clone()
        }
        _ => return invalid_body(),
    };
    let mut g = lock(&s.easemob().inner);
    let mut ids = Map::new();
    let mut overflowing = Vec::new();
    for id in &to {
        if kind == Conversation::Room {
            // Past 20 a second a room drops messages, low priority first,
            // while the call still succeeds: a loss the host must not cause.
            let window = g
                .per_room
                .entry(id.clone())
                .or_insert_with(|| SlidingWindow::new(20, Duration::from_secs(1)));
            if !window.allows(s.clock.now_for_limits()) {
                overflowing.push(format!("{} in room {id}", window.describe()));
            }
            window.record(now);
        }
        g.next_id += 1;
        ids.insert(id.clone(), json!(g.next_id.to_string()));
    }
    drop(g);
    for limit in overflowing {
        s.violation(SimProvider::Easemob, endpoint, limit, "dropped");
    }
    for id in &to {
        let target = match kind {
            Conversation::Room => Target::ChatRoom { id: id.clone() },
            Conversation::Group => Target::Group { id: id.clone() },
            Conversation::User => Target::Account { id: id.clone() },
        };
        tracing::info!(
            target: "botbox_sim",
            "easemob  {endpoint} {} <{}> {}",
            escape_for_log(id, 64),
            escape_for_log(&from, 64),
            escape_for_log(&summary(&msg), 200)
        );
        let mut content = Map::new();
        content.insert("msg".into(), msg.clone());
        if let Some(ext) = &ext {
            content.insert("ext".into(), ext.clone());
        }
        if kind == Conversation::Room {
            content.insert("chatroom_msg_level".into(), json!(level));
        }
        s.records.delivery(SimDelivery {
            seq: 0,
            provider: SimProvider::Easemob,
            endpoint: endpoint.to_owned(),
            target,
            sender: Some(from.clone()),
            content: Value::Object(content),
            provider_id: ids
                .get(id)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            at: now,
            unix_ms: unix_ms(),
        });
    }
    Handled::delivered(ok_response(s, endpoint, Value::Object(ids)))
}

/// A 200 answer with Easemob's envelope around `data`.
fn ok_response(s: &Shared, endpoint: &str, data: Value) -> Response {
    let cfg = &s.easemob().cfg;
    let base = s.easemob().base_url.get().cloned().unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({
            "path": format!("/{endpoint}"),
            "uri": format!("{base}/{}/{}/{endpoint}", cfg.org, cfg.app),
            "timestamp": unix_ms(),
            "organization": cfg.org,
            "application": cfg.application,
            "action": "post",
            "data": data,
            "duration": 0,
            "applicationName": cfg.app,
        }),
    )
}

struct Broadcast {
    from: String,
    msg: Value,
    ext: Option<Value>,
    level: String,
}

/// A 400 refusal: (error, error_description).
type Invalid = (&'static str, &'static str);

fn illegal(description: &'static str) -> Invalid {
    ("illegal_argument", description)
}

const INVALID_BODY: Invalid = (
    "invalid_request_body",
    "Request body is invalid. Please check body is correct.",
);

fn validate(kind: Kind, req: &Map<String, Value>) -> Result<Broadcast, Invalid> {
    if kind == Kind::AllUsers {
        match req.get("target_type") {
            None | Some(Value::Null) => return Err(illegal("target_type must be provided")),
            Some(v) if v.as_str() == Some("users") => {}
            Some(_) => return Err(illegal("target_type can only be 'users'")),
        }
    }
    let from = match req.get("from") {
        None => "admin".to_owned(),
        Some(Value::String(f)) if f.is_empty() => return Err(illegal("from can't be empty")),
        Some(Value::String(f)) => f.clone(),
        Some(_) => return Err(INVALID_BODY),
    };
    let ext = match req.get("ext") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(illegal("ext must be JSONObject")),
    };
    let msg = req.get("msg").ok_or(INVALID_BODY)?;
    check_msg(msg).map_err(|()| INVALID_BODY)?;
    let level = if kind == Kind::ChatRooms {
        match req.get("chatroom_msg_level") {
            None => "normal".to_owned(),
            Some(Value::String(l)) if ["high", "normal", "low"].contains(&l.as_str()) => l.clone(),
            Some(_) => return Err(INVALID_BODY),
        }
    } else {
        String::new()
    };
    Ok(Broadcast {
        from,
        msg: msg.clone(),
        ext,
        level,
    })
}

/// The `msg` object: `type` plus the fields of the same-named message
/// body in the single/group/room send APIs.
fn check_msg(msg: &Value) -> Result<(), ()> {
    let m = msg.as_object().ok_or(())?;
    let ty = m.get("type").and_then(Value::as_str).ok_or(())?;
    if !MSG_TYPES.contains(&ty) {
        return Err(());
    }
    let s = |k: &str| m.get(k).is_some_and(Value::is_string);
    let opt_s = |k: &str| m.get(k).is_none_or(Value::is_string);
    let opt_n = |k: &str| m.get(k).is_none_or(Value::is_number);
    // Latitude/longitude appear as strings in the examples and as numbers elsewhere.
    let coord = |k: &str| m.get(k).is_some_and(|v| v.is_string() || v.is_number());
    let ok = match ty {
        "txt" => s("msg"),
        "img" => {
            s("url")
                && opt_s("filename")
                && opt_s("secret")
                && m.get("size").is_none_or(Value::is_object)
        }
        "audio" => s("url") && opt_s("filename") && opt_s("secret") && opt_n("length"),
        "video" => {
            s("url") && opt_s("thumb") && opt_s("secret") && opt_n("length") && opt_n("file_length")
        }
        "file" => s("url") && s("filename") && opt_s("secret"),
        "loc" => coord("lat") && coord("lng") && s("addr"),
        "cmd" => s("action"),
        "custom" => {
            opt_s("customEvent")
                && m.get("customExts").is_none_or(|v| {
                    v.as_object()
                        .is_some_and(|o| o.len() <= 16 && o.values().all(Value::is_string))
                })
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(()) }
}

fn summary(msg: &Value) -> String {
    let ty = msg.get("type").and_then(Value::as_str).unwrap_or("?");
    match ty {
        "txt" => msg
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        "cmd" => format!(
            "[cmd {}]",
            msg.get("action")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        "custom" => format!(
            "[custom {}]",
            msg.get("customEvent")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        other => format!("[{other}]"),
    }
}

// ---------------------------------------------------------------------------
// What this simulator is configured with (`SimConfig.easemob`).

/// The Easemob simulator's config.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EasemobConfig {
    pub org: String,
    pub app: String,
    pub client_id: String,
    pub client_secret: String,
    /// App token lifetime in simulated seconds (reported as `expires_in`).
    pub token_ttl_secs: u64,
    /// The app's UUID, returned as `application`.
    pub application: String,
    /// Broadcasts must be opened by Easemob sales; off gives 403 "message broadcast service is unopened".
    pub broadcast_enabled: bool,
    /// Daily quotas (the per-window limits are fixed by the docs and cannot be raised).
    pub daily_all_users: u32,
    pub daily_online_users: u32,
    pub daily_chatrooms: u32,
    /// `Some(minutes)`: the daily quotas count the calendar day in the zone
    /// that many minutes east of UTC, on the calendar
    /// [`crate::Sim::calendar_origin_ms`] starts. The default is `Some(0)`,
    /// Easemob's own UTC day ("API 限流周期按照 UTC 时间计算", limitationapi.html).
    /// `None`: any rolling 24 h, stricter than any calendar.
    pub daily_utc_offset_minutes: Option<i32>,
}

/// One daily quota, counted as configured.
#[derive(Debug)]
enum Daily {
    Rolling(SlidingWindow),
    Calendar(CalendarDay),
}

impl Daily {
    fn new(limit: u32, utc_offset_minutes: Option<i32>) -> Daily {
        match utc_offset_minutes {
            None => Daily::Rolling(SlidingWindow::new(limit, DAY)),
            Some(offset) => Daily::Calendar(CalendarDay::new(limit, offset)),
        }
    }
}

impl Default for EasemobConfig {
    fn default() -> Self {
        EasemobConfig {
            org: "sim-org".to_owned(),
            app: "sim-app".to_owned(),
            client_id: "YXA6simClientId0botbox".to_owned(),
            client_secret: "YXA6simClientSecret0botbox0f4e".to_owned(),
            token_ttl_secs: 7200,
            application: "5b1d7e00-51a0-4b0c-9e5f-000000b07b0c".to_owned(),
            broadcast_enabled: true,
            daily_all_users: 3,
            daily_online_users: 50,
            daily_chatrooms: 100,
            daily_utc_offset_minutes: Some(0),
        }
    }
}

impl fmt::Debug for EasemobConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EasemobConfig")
            .field("org", &self.org)
            .field("app", &self.app)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("application", &self.application)
            .field("broadcast_enabled", &self.broadcast_enabled)
            .field("daily_all_users", &self.daily_all_users)
            .field("daily_online_users", &self.daily_online_users)
            .field("daily_chatrooms", &self.daily_chatrooms)
            .field("daily_utc_offset_minutes", &self.daily_utc_offset_minutes)
            .finish()
    }
}

/// The Easemob simulator, for [`crate::kind::KINDS`].
pub(crate) const KIND: SimKind = SimKind {
    provider: SimProvider::Easemob,
    section_name: "easemob",
    base_path: "",
    port: |p| &mut p.easemob,
    validate: |cfg| {
        if cfg.easemob.token_ttl_secs == 0 {
            return Err("token lifetimes must be at least 1 second");
        }
        Ok(())
    },
    state: |cfg, url, _| Box::new(EasemobState::new(cfg.easemob.clone(), url.to_owned())),
    router,
    unrouted_path: keep_path,
    text: |content| {
        let msg = content.get("msg")?;
        (msg.get("type")?.as_str()? == "txt")
            .then(|| msg.get("msg")?.as_str().map(str::to_owned))
            .flatten()
    },
    section: |cfg, name, url, secret| {
        let c = &cfg.easemob;
        format!(
            "[providers.{name}]\nkind = \"easemob\"\nurl = {}\norg = {}\napp = {}\nclient_id = {}\nclient_secret = {}\n",
            toml_str(url),
            toml_str(&c.org),
            toml_str(&c.app),
            secret("easemob-client-id", &c.client_id),
            secret("easemob-client-secret", &c.client_secret)
        )
    },
    credentials: |cfg| {
        vec![
            cfg.easemob.client_id.clone(),
            cfg.easemob.client_secret.clone(),
        ]
    },
    error_answer: |error, status, description| {
        let status = status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        error_body(status, error, description)
    },
};

impl Shared {
    pub(crate) fn easemob(&self) -> &EasemobState {
        self.state()
    }
}

/// What the [`Sim`](crate::Sim) handle offers for this simulator alone.
impl crate::Sim {
    /// `http://127.0.0.1:P`
    pub fn easemob_url(&self) -> String {
        self.url(SimProvider::Easemob)
    }
    /// Whether broadcasts are opened for the app (off: 403 "message broadcast service is unopened").
    pub fn easemob_set_broadcast_enabled(&self, on: bool) {
        self.shared.easemob().set_broadcast_enabled(on);
    }
    /// Expires every Easemob app token now.
    pub fn easemob_expire_tokens(&self) {
        self.shared.easemob().expire_tokens(&self.shared.clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_types_need_their_fields() {
        for ok in [
            json!({"type": "txt", "msg": "hi"}),
            json!({"type": "img", "url": "u", "filename": "a.jpg", "size": {"width": 1, "height": 2}}),
            json!({"type": "loc", "lat": "39.9", "lng": 116.3, "addr": "x"}),
            json!({"type": "cmd", "action": "a"}),
            json!({"type": "custom", "customEvent": "e", "customExts": {"k": "v"}}),
        ] {
            assert_eq!(check_msg(&ok), Ok(()), "{ok}");
        }
        for bad in [
            json!("txt"),
            json!({"type": "txt"}),
            json!({"type": "sticker", "msg": "x"}),
            json!({"type": "file", "url": "u"}),
            json!({"type": "custom", "customExts": {"k": 1}}),
        ] {
            assert_eq!(check_msg(&bad), Err(()), "{bad}");
        }
    }
}
