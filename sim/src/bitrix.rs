//! Bitrix24: `im.message.add` through an incoming webhook or OAuth, the OAuth
//! token server, and the per-portal leaky bucket.
//!
//! Answers are `{"result": …, "time": {…}}` or `{"error", "error_description"}`.
//! Checks run in this order:
//!
//! | check | status | error |
//! |---|---|---|
//! | webhook user id or code wrong | 401 | `INVALID_CREDENTIALS` ("Invalid request credentials") |
//! | OAuth: no `auth` in query, form or JSON body | 401 | `NO_AUTH_FOUND` |
//! | OAuth: unknown token | 401 | `invalid_token` ("The access token provided is invalid.") |
//! | OAuth: expired token | 401 | `expired_token` ("The access token provided has expired.") |
//! | bucket full (drain 2/s, burst 50 by default) | 503 | `QUERY_LIMIT_EXCEEDED` (a violation) |
//! | the method's execution time in the last 10 (simulated) minutes over `operating_budget_secs` (480 s) | 429 | `OPERATION_TIME_LIMIT` (a violation) |
//! | another method | 404 | `ERROR_METHOD_NOT_FOUND` |
//! | body undecodable or over 256 KiB, or none of DIALOG_ID/CHAT_ID/USER_ID | 400 | `PARAMS_ERROR` |
//! | `DIALOG_ID=chatN` with N ≤ 0 | 400 | `CHAT_ID_EMPTY` |
//! | `DIALOG_ID` not `chatN` and `intval` ≤ 0 | 400 | `USER_ID_EMPTY` |
//! | chat not among `known_chats` | 400 | `ACCESS_ERROR` |
//! | ATTACH / KEYBOARD / MENU with nothing valid in it | 400 | `ATTACH_ERROR` / `KEYBOARD_ERROR` / `MENU_ERROR` |
//! | ATTACH / KEYBOARD / MENU over 30,000 bytes of compact JSON | 400 | `ATTACH_OVERSIZE` / `KEYBOARD_OVERSIZE` / `MENU_OVERSIZE` |
//! | MESSAGE empty (after trimming) and no ATTACH | 400 | `MESSAGE_EMPTY` |
//!
//! Parameter names are case-insensitive (PHP upper-cases them); parameters
//! come from the query string and the body (form or JSON), the body winning.
//!
//! Every answer of `im.message.add` carries `time.operating`: the seconds
//! the method ran (`operating_secs_per_call`, in simulated seconds), which
//! Bitrix24 sums per method over the last 10 minutes; past 480 s the method
//! is blocked ("If the combined execution time for a method exceeds 480
//! seconds within 10 minutes, the method is blocked … receive a 429 error",
//! helpdesk.bitrix24.com/open/15961972; training.bitrix24.com
//! rest_help/rest_sum/operating.php), and `time.operating_reset_at` says when
//! part of the budget frees up.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::clock::{LeakyBucket, SimClock, unix_ms, unix_secs};
use crate::codec::{parse_query, php_form, php_intval};
use crate::config::REDACTED;
use crate::kind::{SimKind, toml_str};
use crate::record::{SimDelivery, SimProvider, Target, escape_for_log};
use crate::server::{ConnHandle, Handled, ReqInfo, guarded, json, read_body};
use crate::{Shared, lock};

/// "Maximum allowed attachment size exceeded (30 Kb)": measured as the compact
/// JSON of the parameter, and taken as 30,000 bytes, the stricter reading.
pub(crate) const MAX_RICH_BYTES: usize = 30_000;
const MAX_BODY: usize = 256 * 1024;

pub(crate) struct BitrixState {
    cfg: BitrixConfig,
    base_url: OnceLock<String>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// access token → simulated expiry
    access: HashMap<String, Duration>,
    /// refresh token → simulated expiry; used ones are removed
    refresh: HashMap<String, Duration>,
    /// refresh token → the access token issued with it. Using the refresh
    /// token invalidates both ("After the indicated refresh_token query is
    /// completed, both such query and jointly issued access_token become
    /// invalid!", training.bitrix24.com, course 169, lesson 20134).
    issued_with: HashMap<String, String>,
    bucket: LeakyBucket,
    /// (simulated time, seconds it ran) of the method's calls in the last
    /// [`OPERATING_WINDOW`].
    operating: std::collections::VecDeque<(Duration, f64)>,
    next_message: u64,
}

/// The window Bitrix24 sums a method's execution time over.
const OPERATING_WINDOW: Duration = Duration::from_secs(600);

impl BitrixState {
    pub(crate) fn new(cfg: BitrixConfig, base_url: String, clock: &SimClock) -> Self {
        let now = clock.now();
        let mut access = HashMap::new();
        access.insert(
            cfg.access_token.clone(),
            now.saturating_add(Duration::from_secs(cfg.token_ttl_secs)),
        );
        let mut refresh = HashMap::new();
        refresh.insert(
            cfg.refresh_token.clone(),
            now.saturating_add(Duration::from_secs(cfg.refresh_ttl_secs)),
        );
        let mut issued_with = HashMap::new();
        issued_with.insert(cfg.refresh_token.clone(), cfg.access_token.clone());
        let inner = Inner {
            access,
            refresh,
            issued_with,
            bucket: LeakyBucket::new(cfg.burst, cfg.drain_per_second),
            operating: std::collections::VecDeque::new(),
            next_message: 1000,
        };
        let url = OnceLock::new();
        let _ = url.set(base_url);
        BitrixState {
            cfg,
            base_url: url,
            inner: Mutex::new(inner),
        }
    }

    /// A new pair, as installing the application again issues one; the
    /// old pairs stay as they are.
    pub(crate) fn issue_pair(&self, clock: &SimClock) -> (String, String) {
        let now = clock.now();
        let mut g = lock(&self.inner);
        let (access, refresh) = (random_token(), random_token());
        g.access.insert(
            access.clone(),
            now.saturating_add(Duration::from_secs(self.cfg.token_ttl_secs)),
        );
        g.refresh.insert(
            refresh.clone(),
            now.saturating_add(Duration::from_secs(self.cfg.refresh_ttl_secs)),
        );
        g.issued_with.insert(refresh.clone(), access.clone());
        (access, refresh)
    }

    pub(crate) fn expire_access_tokens(&self, clock: &SimClock) {
        let now = clock.now();
        for exp in lock(&self.inner).access.values_mut() {
            *exp = now;
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/rest/{method}", any(rest))
        .route("/rest/{user}/{code}/{method}", any(rest))
        .route("/oauth/token", any(oauth))
        .route("/oauth/token/", any(oauth))
}

/// How the caller proved who it is.
enum Auth {
    Webhook { user: String, code: String },
    OAuth,
}

async fn rest(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (auth, method, redacted) = match segs.as_slice() {
        ["rest", method] => (Auth::OAuth, *method, path.clone()),
        ["rest", user, code, method] => (
            Auth::Webhook {
                user: (*user).to_owned(),
                code: (*code).to_owned(),
            },
            *method,
            // The code is the webhook's whole secret: never record it.
            format!("/rest/{user}/***/{method}"),
        ),
        _ => (Auth::OAuth, "", path.clone()),
    };
    let method = method.to_ascii_lowercase();
    let endpoint = method.strip_suffix(".json").unwrap_or(&method).to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let info = ReqInfo {
        provider: SimProvider::Bitrix,
        endpoint: endpoint.clone(),
        method: req.method().to_string(),
        path: redacted,
    };
    let body = req.into_body();
    guarded(&s, info, conn, rate_limited, || async {
        if let Auth::Webhook { user, code } = &auth {
            let cfg = &s.bitrix().cfg;
            if *user != cfg.webhook_user_id.to_string() || *code != cfg.webhook_code {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_CREDENTIALS",
                    "Invalid request credentials",
                );
            }
        }
        let params = match read_params(&query, &headers, body).await {
            Ok(p) => p,
            Err(detail) => return params_error(&detail),
        };
        handle(&s, auth, &endpoint, params)
    })
    .await
}

fn error_response(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn err(status: StatusCode, error: &str, description: &str) -> Handled {
    Handled::rejected(error_response(status, error, description), error)
}

fn bad(error: &str, description: &str) -> Handled {
    err(StatusCode::BAD_REQUEST, error, description)
}

/// A refusal decided by a validation step, turned into a response by the caller.
struct ApiError {
    error: &'static str,
    description: String,
}

fn rej(error: &'static str, description: &str) -> ApiError {
    ApiError {
        error,
        description: description.to_owned(),
    }
}

impl From<ApiError> for Handled {
    fn from(e: ApiError) -> Self {
        bad(e.error, &e.description)
    }
}

fn params_error(detail: &str) -> Handled {
    bad("PARAMS_ERROR", &format!("Something went wrong: {detail}"))
}

fn rate_limited() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "QUERY_LIMIT_EXCEEDED",
        "Too many requests",
    )
}

/// Query parameters overlaid with the body's (form or JSON), like PHP's `$_REQUEST`.
async fn read_params(
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, String> {
    let mut params = php_form(parse_query(query).map_err(|e| e.to_string())?);
    let bytes = read_body(body, MAX_BODY)
        .await
        .map_err(|_| "request body too large".to_owned())?;
    if bytes.is_empty() {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body_params = if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            _ => return Err("the JSON body is not an object".into()),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(&bytes).map_err(|_| "form body is not UTF-8".to_owned())?;
        php_form(parse_query(text).map_err(|e| e.to_string())?)
    } else {
        // PHP fills $_POST only from form bodies; anything else is ignored.
        Map::new()
    };
    params.extend(body_params);
    Ok(params)
}

fn handle(s: &Shared, auth: Auth, endpoint: &str, params: Map<String, Value>) -> Handled {
    let cfg = &s.bitrix().cfg;
    let now = s.clock.now();
    let acting_user = match auth {
        // Checked before the body was read.
        Auth::Webhook { .. } => cfg.webhook_user_id,
        Auth::OAuth => {
            let token = params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("auth"))
                .and_then(|(_, v)| v.as_str())
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "NO_AUTH_FOUND",
                    "Wrong authorization data",
                );
            };
            let g = lock(&s.bitrix().inner);
            match g.access.get(token) {
                None => {
                    return err(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "The access token provided is invalid.",
                    );
                }
                Some(exp) if *exp <= now => {
                    return err(
                        StatusCode::UNAUTHORIZED,
                        "expired_token",
                        "The access token provided has expired.",
                    );
                }
                Some(_) => {}
            }
            cfg.oauth_user_id
        }
    };

    {
        let mut g = lock(&s.bitrix().inner);
        if !g.bucket.try_add(now, s.clock.now_for_limits()) {
            let limit = g.bucket.describe();
            drop(g);
            s.violation(SimProvider::Bitrix, endpoint, limit, "QUERY_LIMIT_EXCEEDED");
            return Handled::rejected(rate_limited(), "QUERY_LIMIT_EXCEEDED");
        }
    }

    if endpoint != crate::endpoints::BITRIX_MESSAGE_ADD {
        return err(
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!",
        );
    }
    // The method's execution-time budget, checked at the receive time (with
    // the same tolerance as every limit): a call arriving when the last
    // 10 minutes already hold the budget is refused.
    {
        let cfg = &s.bitrix().cfg;
        let mut g = lock(&s.bitrix().inner);
        let at = s.clock.now_for_limits();
        while g
            .operating
            .front()
            .is_some_and(|(t, _)| t.saturating_add(OPERATING_WINDOW) <= at)
        {
            g.operating.pop_front();
        }
        let spent: f64 = g.operating.iter().map(|(_, secs)| secs).sum();
        if spent >= cfg.operating_budget_secs {
            drop(g);
            s.violation(
                SimProvider::Bitrix,
                endpoint,
                format!(
                    "{} s of execution time per 10 min ({spent:.1} s spent)",
                    cfg.operating_budget_secs
                ),
                "OPERATION_TIME_LIMIT",
            );
            return err(
                StatusCode::TOO_MANY_REQUESTS,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            );
        }
        g.operating.push_back((now, cfg.operating_secs_per_call));
    }
    let params: Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    message_add(s, acting_user, &params)
}

#[derive(Clone, Copy)]
enum Rich {
    Attach,
    Keyboard,
    Menu,
}

impl Rich {
    fn name(self) -> &'static str {
        match self {
            Rich::Attach => "ATTACH",
            Rich::Keyboard => "KEYBOARD",
            Rich::Menu => "MENU",
        }
    }
    fn invalid(self) -> ApiError {
        match self {
            Rich::Attach => rej(
                "ATTACH_ERROR",
                "Complete passed attachment object was not validated",
            ),
            Rich::Keyboard => rej(
                "KEYBOARD_ERROR",
                "Complete passed keyboard object was not validated",
            ),
            Rich::Menu => rej("MENU_ERROR", "Complete passed menu object not validated"),
        }
    }
    fn oversize(self) -> ApiError {
        match self {
            Rich::Attach => rej(
                "ATTACH_OVERSIZE",
                "Maximum allowed attachment size exceeded (30 Kb)",
            ),
            Rich::Keyboard => rej(
                "KEYBOARD_OVERSIZE",
                "Maximum permissible keyboard size exceeded (30 Kb)",
            ),
            Rich::Menu => rej(
                "MENU_OVERSIZE",
                "Maximum permissible menu size exceeded (30 Kb)",
            ),
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn resolve_target(cfg: &BitrixConfig, p: &Map<String, Value>) -> Result<Target, ApiError> {
    let chat_empty = || {
        rej(
            "CHAT_ID_EMPTY",
            "Message recipient chat not specified for a chat message",
        )
    };
    let target = if let Some(dialog) = p.get("DIALOG_ID") {
        let dialog = scalar_text(dialog).unwrap_or_default();
        match chat_number(&dialog) {
            Some(n) if n <= 0 => return Err(chat_empty()),
            Some(n) => Target::Chat {
                id: n.unsigned_abs(),
            },
            None => user_target(php_intval(&dialog))?,
        }
    } else if let Some(chat) = p.get("CHAT_ID") {
        let n = php_intval(&scalar_text(chat).unwrap_or_default());
        if n <= 0 {
            return Err(chat_empty());
        }
        Target::Chat {
            id: n.unsigned_abs(),
        }
    } else if let Some(user) = p.get("USER_ID") {
        user_target(php_intval(&scalar_text(user).unwrap_or_default()))?
    } else {
        return Err(rej(
            "PARAMS_ERROR",
            "Something went wrong: DIALOG_ID is required",
        ));
    };
    if let Target::Chat { id } = target {
        let known = cfg
            .known_chats
            .iter()
            .any(|c| c.strip_prefix("chat").unwrap_or(c) == id.to_string());
        if !known {
            return Err(rej(
                "ACCESS_ERROR",
                "Insufficient access permissions to send the message",
            ));
        }
    }
    Ok(target)
}

fn message_add(s: &Shared, acting_user: u64, p: &Map<String, Value>) -> Handled {
    let target = match resolve_target(&s.bitrix().cfg, p) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let mut rich = Map::new();
    for kind in [Rich::Attach, Rich::Keyboard, Rich::Menu] {
        match check_rich(kind, p.get(kind.name())) {
            Ok(Some(v)) => {
                rich.insert(kind.name().to_owned(), v);
            }
            Ok(None) => {}
            Err(e) => return e.into(),
        }
    }
    let message = p.get("MESSAGE").and_then(scalar_text).unwrap_or_default();
    if message.trim().is_empty() && !rich.contains_key("ATTACH") {
        return bad("MESSAGE_EMPTY", "Message text not passed");
    }
    let yes = |k: &str, default: bool| {
        p.get(k)
            .and_then(scalar_text)
            .map_or(default, |v| v.eq_ignore_ascii_case("Y"))
    };
    let system = yes("SYSTEM", false);
    let url_preview = yes("URL_PREVIEW", true);

    let id = {
        let mut g = lock(&s.bitrix().inner);
        g.next_message += 1;
        g.next_message
    };
    let dialog = match &target {
        Target::Chat { id } => format!("chat{id}"),
        Target::User { id } => format!("user{id}"),
        _ => String::new(),
    };
    tracing::info!(
        target: "botbox_sim",
        "bitrix   {dialog} <user:{acting_user}>{} {}{}",
        if system { " [system]" } else { "" },
        escape_for_log(&message, 200),
        if rich.is_empty() {
            String::new()
        } else {
            format!(" [{}]", rich.keys().cloned().collect::<Vec<_>>().join(","))
        }
    );
    let mut content = Map::new();
    content.insert("MESSAGE".into(), json!(message));
    content.insert("SYSTEM".into(), json!(if system { "Y" } else { "N" }));
    content.insert(
        "URL_PREVIEW".into(),
        json!(if url_preview { "Y" } else { "N" }),
    );
    content.extend(rich);
    s.records.delivery(SimDelivery {
        seq: 0,
        provider: SimProvider::Bitrix,
        endpoint: crate::endpoints::BITRIX_MESSAGE_ADD.to_owned(),
        target,
        sender: Some(acting_user.to_string()),
        content: Value::Object(content),
        provider_id: id.to_string(),
        at: s.clock.now(),
        unix_ms: unix_ms(),
    });
    Handled::delivered(json(
        StatusCode::OK,
        &json!({"result": id, "time": time_block(s)}),
    ))
}

/// `chatN` (case-insensitive, digits only, as Bitrix's `isChatId`).
fn chat_number(dialog: &str) -> Option<i64> {
    let prefix = dialog.get(..4)?;
    let digits = &dialog[4..];
    (prefix.eq_ignore_ascii_case("chat")
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then(|| php_intval(digits))
}

fn user_target(n: i64) -> Result<Target, ApiError> {
    if n <= 0 {
        return Err(rej(
            "USER_ID_EMPTY",
            "Recipient ID not specified for person-to-person chat message",
        ));
    }
    Ok(Target::User {
        id: n.unsigned_abs(),
    })
}

/// An empty value means "none", as in the documented example (`'ATTACH' => ''`).
fn check_rich(kind: Rich, v: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(v) => v,
    };
    let items = match (kind, v) {
        (_, Value::Array(items)) => items.as_slice(),
        (Rich::Attach, Value::Object(o)) => match o.get("BLOCKS") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => return Err(kind.invalid()),
        },
        (Rich::Keyboard, Value::Object(o)) => match o.get("BUTTONS") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => return Err(kind.invalid()),
        },
        _ => return Err(kind.invalid()),
    };
    let valid = match kind {
        Rich::Attach => items.iter().any(attach_block_ok),
        Rich::Keyboard => items.iter().any(button_ok),
        Rich::Menu => items.iter().any(menu_item_ok),
    };
    if !valid {
        return Err(kind.invalid());
    }
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_RICH_BYTES {
        return Err(kind.oversize());
    }
    Ok(Some(v.clone()))
}

fn str_field(o: &Map<String, Value>, k: &str) -> bool {
    o.get(k)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// One attachment block: an object of known block types (unknown ones make
/// the block invalid; the attachment fails only if no block is valid).
fn attach_block_ok(block: &Value) -> bool {
    let Some(o) = block.as_object() else {
        return false;
    };
    let linked = |v: &Value| match v {
        Value::Object(o) => str_field(o, "LINK"),
        Value::Array(a) => {
            !a.is_empty()
                && a.iter()
                    .all(|i| i.as_object().is_some_and(|o| str_field(o, "LINK")))
        }
        _ => false,
    };
    !o.is_empty()
        && o.iter().all(|(k, v)| match k.as_str() {
            "MESSAGE" => v.as_str().is_some_and(|s| !s.is_empty()),
            "LINK" | "IMAGE" | "FILE" => linked(v),
            "DELIMITER" => v.is_object(),
            "USER" => v.as_object().is_some_and(|o| str_field(o, "NAME")),
            "GRID" => v.as_array().is_some_and(|a| {
                !a.is_empty()
                    && a.iter().all(|i| {
                        i.as_object()
                            .is_some_and(|o| str_field(o, "NAME") || str_field(o, "VALUE"))
                    })
            }),
            _ => false,
        })
}

fn button_ok(b: &Value) -> bool {
    let Some(o) = b.as_object() else {
        return false;
    };
    if o.get("TYPE").and_then(Value::as_str) == Some("NEWLINE") {
        return false;
    }
    str_field(o, "TEXT")
        && ["COMMAND", "LINK", "ACTION", "APP_ID"]
            .iter()
            .any(|k| str_field(o, k) || o.get(*k).is_some_and(Value::is_number))
}

fn menu_item_ok(m: &Value) -> bool {
    let Some(o) = m.as_object() else {
        return false;
    };
    str_field(o, "TEXT")
        && ["COMMAND", "LINK", "ACTION", "APP_ID"]
            .iter()
            .any(|k| str_field(o, k) || o.get(*k).is_some_and(Value::is_number))
}

/// The `time` of an answer: when it ran, how long (`operating`, in
/// simulated seconds), and when part of the method's budget frees up
/// (`operating_reset_at`, Unix seconds: the oldest counted call leaves the
/// 10-minute window then).
fn time_block(s: &Shared) -> Value {
    let now = unix_ms() as f64 / 1000.0;
    let operating = s.bitrix().cfg.operating_secs_per_call;
    let oldest = lock(&s.bitrix().inner).operating.front().map(|(t, _)| *t);
    let reset_in = oldest
        .map(|t| {
            s.clock.to_real(
                t.saturating_add(OPERATING_WINDOW)
                    .saturating_sub(s.clock.now()),
            )
        })
        .unwrap_or(Duration::ZERO);
    json!({
        "start": now,
        "finish": now,
        "duration": operating,
        "processing": operating,
        "operating": operating,
        "operating_reset_at": (now + reset_in.as_secs_f64()).ceil() as u64,
    })
}

async fn oauth(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let info = ReqInfo {
        provider: SimProvider::Bitrix,
        endpoint: crate::endpoints::BITRIX_OAUTH_TOKEN.to_owned(),
        method: req.method().to_string(),
        path,
    };
    let body = req.into_body();
    guarded(&s, info, conn, rate_limited, || async {
        s.records.token_fetch(SimProvider::Bitrix);
        let params = match read_params(&query, &headers, body).await {
            Ok(p) => p,
            Err(detail) => {
                return err(StatusCode::BAD_REQUEST, "invalid_request", &detail);
            }
        };
        refresh(&s, &params)
    })
    .await
}

fn refresh(s: &Shared, p: &Map<String, Value>) -> Handled {
    let cfg = &s.bitrix().cfg;
    let get = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
    match get("grant_type") {
        "refresh_token" => {}
        "" => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The grant type was not specified in the request",
            );
        }
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The grant type is not supported by the simulator (use refresh_token)",
            );
        }
    }
    if get("client_id") != cfg.client_id || get("client_secret") != cfg.client_secret {
        return err(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client credentials are invalid",
        );
    }
    let now = s.clock.now();
    let mut g = lock(&s.bitrix().inner);
    let presented = get("refresh_token");
    // Used once, valid or not; the access token issued with it dies too.
    if let Some(old) = g.issued_with.remove(presented) {
        g.access.remove(&old);
    }
    match g.refresh.remove(presented) {
        Some(exp) if exp > now => {}
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token is invalid or expired",
            );
        }
    }
    let access = random_token();
    let refresh = random_token();
    let ttl = cfg.token_ttl_secs;
    g.access.retain(|_, exp| *exp > now);
    g.access
        .insert(access.clone(), now.saturating_add(Duration::from_secs(ttl)));
    g.refresh.insert(
        refresh.clone(),
        now.saturating_add(Duration::from_secs(cfg.refresh_ttl_secs)),
    );
    g.issued_with.insert(refresh.clone(), access.clone());
    drop(g);
    tracing::info!(target: "botbox_sim", "bitrix   issued OAuth tokens (expires_in {ttl} s simulated)");
    let base = s.bitrix().base_url.get().cloned().unwrap_or_default();
    let real_ttl = s.clock.to_real(Duration::from_secs(ttl)).as_secs();
    Handled::ok(json(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "expires": unix_secs().saturating_add(real_ttl),
            "expires_in": ttl,
            "scope": "app",
            "domain": base.trim_start_matches("http://"),
            "server_endpoint": format!("{base}/rest/"),
            "status": "L",
            "client_endpoint": format!("{base}/rest/"),
            "member_id": "5f1e0b07b0c0000000000000b07b0c00",
            "user_id": cfg.oauth_user_id,
            "refresh_token": refresh,
        }),
    ))
}

fn random_token() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

// ---------------------------------------------------------------------------
// What this simulator is configured with (`SimConfig.bitrix`).

/// The Bitrix24 simulator's config.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BitrixConfig {
    /// The user id in the incoming-webhook URL `/rest/{user_id}/{code}/…`.
    pub webhook_user_id: u64,
    /// The webhook code, which is the webhook's whole secret.
    pub webhook_code: String,
    pub client_id: String,
    pub client_secret: String,
    /// The OAuth access token valid when the simulator starts.
    pub access_token: String,
    /// The OAuth refresh token valid when the simulator starts (single use).
    pub refresh_token: String,
    /// The user the OAuth tokens act for.
    pub oauth_user_id: u64,
    /// Access token lifetime in simulated seconds (1 h on real portals).
    pub token_ttl_secs: u64,
    /// Refresh token lifetime in simulated seconds (28 days on real portals).
    pub refresh_ttl_secs: u64,
    /// Chats the senders belong to, as `chatN` (or `N`); other chats give ACCESS_ERROR.
    pub known_chats: Vec<String>,
    /// Leaky bucket: how many requests drain per (simulated) second…
    pub drain_per_second: f64,
    /// …and how many fit in it (2/s and 50 on ordinary plans, 5/s and 250 on Enterprise).
    pub burst: u32,
    /// How long each `im.message.add` runs, in simulated seconds, as its
    /// answer's `time.operating` reports.
    pub operating_secs_per_call: f64,
    /// Execution seconds a method may use in any 10 (simulated) minutes
    /// before it is blocked (480 on Bitrix24 cloud).
    pub operating_budget_secs: f64,
}

impl Default for BitrixConfig {
    fn default() -> Self {
        BitrixConfig {
            webhook_user_id: 1,
            webhook_code: "simwebhook0c0de7x2".to_owned(),
            client_id: "local.5f1e0b07b0c000.sim".to_owned(),
            client_secret: "simBitrixClientSecret0botbox7a9e".to_owned(),
            access_token: "sim-bitrix-access-0000".to_owned(),
            refresh_token: "sim-bitrix-refresh-0000".to_owned(),
            oauth_user_id: 1,
            token_ttl_secs: 3600,
            refresh_ttl_secs: 28 * 24 * 3600,
            known_chats: vec!["chat1".to_owned(), "chat13".to_owned()],
            drain_per_second: 2.0,
            burst: 50,
            operating_secs_per_call: 0.05,
            operating_budget_secs: 480.0,
        }
    }
}

impl fmt::Debug for BitrixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitrixConfig")
            .field("webhook_user_id", &self.webhook_user_id)
            .field("webhook_code", &REDACTED)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("access_token", &REDACTED)
            .field("refresh_token", &REDACTED)
            .field("oauth_user_id", &self.oauth_user_id)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .field("known_chats", &self.known_chats)
            .field("drain_per_second", &self.drain_per_second)
            .field("burst", &self.burst)
            .field("operating_secs_per_call", &self.operating_secs_per_call)
            .field("operating_budget_secs", &self.operating_budget_secs)
            .finish()
    }
}

/// The Bitrix24 simulator, for [`crate::kind::KINDS`].
pub(crate) const KIND: SimKind = SimKind {
    provider: SimProvider::Bitrix,
    section_name: "bitrix24",
    base_path: "",
    port: |p| &mut p.bitrix,
    validate: |cfg| {
        let c = &cfg.bitrix;
        if c.token_ttl_secs == 0 {
            return Err("token lifetimes must be at least 1 second");
        }
        if c.burst == 0 || !(c.drain_per_second.is_finite() && c.drain_per_second > 0.0) {
            return Err("bitrix.burst and bitrix.drain_per_second must be above 0");
        }
        Ok(())
    },
    state: |cfg, url, clock| Box::new(BitrixState::new(cfg.bitrix.clone(), url.to_owned(), clock)),
    router,
    // A webhook path that matched no route may still carry a code.
    unrouted_path: |path| {
        if path.starts_with("/rest/") {
            "/rest/…".to_owned()
        } else {
            path
        }
    },
    text: |content| content.get("MESSAGE")?.as_str().map(str::to_owned),
    section: |cfg, name, url, secret| {
        format!(
            "[providers.{name}]\nkind = \"bitrix24\"\nurl = {}\nwebhook = {{ user_id = {}, code = {} }}\n",
            toml_str(url),
            cfg.bitrix.webhook_user_id,
            secret("bitrix-webhook-code", &cfg.bitrix.webhook_code)
        )
    },
    credentials: |cfg| {
        let c = &cfg.bitrix;
        vec![
            c.webhook_code.clone(),
            c.client_secret.clone(),
            c.access_token.clone(),
            c.refresh_token.clone(),
        ]
    },
    error_answer: |error, status, description| {
        let status = status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        error_response(status, error, description)
    },
};

impl Shared {
    pub(crate) fn bitrix(&self) -> &BitrixState {
        self.state()
    }
}

/// What the [`Sim`](crate::Sim) handle offers for this simulator alone.
impl crate::Sim {
    /// `http://127.0.0.1:P`
    pub fn bitrix_url(&self) -> String {
        self.url(SimProvider::Bitrix)
    }
    /// Expires every Bitrix24 access token now (refresh tokens stay valid).
    pub fn bitrix_expire_access_tokens(&self) {
        self.shared
            .bitrix()
            .expire_access_tokens(&self.shared.clock);
    }
    /// Issues a new Bitrix24 OAuth pair `(access, refresh)`, as an operator
    /// gets one by installing the application again.
    pub fn bitrix_issue_tokens(&self) -> (String, String) {
        self.shared.bitrix().issue_pair(&self.shared.clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_ids_parse_like_bitrix() {
        assert_eq!(chat_number("chat13"), Some(13));
        assert_eq!(chat_number("CHAT7"), Some(7));
        assert_eq!(chat_number("chat0"), Some(0));
        assert_eq!(chat_number("chat"), None);
        assert_eq!(chat_number("chatx1"), None);
        assert_eq!(chat_number("256"), None);
    }

    #[test]
    fn rich_params_validate_and_cap() {
        assert!(matches!(
            check_rich(Rich::Attach, Some(&json!(""))),
            Ok(None)
        ));
        assert!(matches!(
            check_rich(
                Rich::Attach,
                Some(&json!([{"MESSAGE": "hi"}, {"BOGUS": 1}]))
            ),
            Ok(Some(_))
        ));
        assert!(check_rich(Rich::Attach, Some(&json!([{"BOGUS": 1}]))).is_err());
        assert!(check_rich(Rich::Attach, Some(&json!("text"))).is_err());
        assert!(matches!(
            check_rich(
                Rich::Attach,
                Some(&json!({"ID": 1, "BLOCKS": [{"LINK": {"LINK": "https://x"}}]}))
            ),
            Ok(Some(_))
        ));
        assert!(matches!(
            check_rich(
                Rich::Keyboard,
                Some(&json!([{"TEXT": "a", "COMMAND": "c"}, {"TYPE": "NEWLINE"}]))
            ),
            Ok(Some(_))
        ));
        assert!(check_rich(Rich::Keyboard, Some(&json!([{"TYPE": "NEWLINE"}]))).is_err());
        assert!(check_rich(Rich::Menu, Some(&json!([{"TEXT": "a"}]))).is_err());
        let big = json!([{"MESSAGE": "x".repeat(MAX_RICH_BYTES)}]);
        assert!(check_rich(Rich::Attach, Some(&big)).is_err());
    }
}
