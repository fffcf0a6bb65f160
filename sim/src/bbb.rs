//! BigBlueButton: the server-to-server API under `/bigbluebutton/api`, plus
//! bbb-webhooks' `hooks/*` calls.
//!
//! Every call is checked the way bbb-web checks it: the checksum is removed
//! from the *raw* query string as received (`&checksum=X`, `checksum=X&` or
//! `checksum=X`), then `lowercase_hex(H(callName + rest + secret))` must equal
//! it exactly, `H` chosen by the checksum's length among the supported
//! algorithms. Answers are XML with HTTP 200, even for `FAILED`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::callbacks;
use crate::clock::unix_ms;
use crate::codec::{first, parse_query, xml_escape};
use crate::config::REDACTED;
use crate::kind::{SimKind, keep_path, toml_str};
use crate::record::{SimDelivery, SimProvider, Target, escape_for_log};
use crate::server::{ConnHandle, Handled, ReqInfo, guarded, json as json_answer, text, xml};
use crate::sign::bbb_checksum;
use crate::{Shared, lock};

/// sendChatMessage limits, in Java `String.length()` units (UTF-16 code
/// units: bbb-web is Java, so an emoji outside the BMP counts twice).
const MAX_MESSAGE: usize = 500;
const MAX_USER_NAME: usize = 255;

/// A callback registered with bbb-webhooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BbbHook {
    /// The `hookID` `hooks/create` answered with.
    pub id: u64,
    /// Where the events are posted.
    pub callback_url: String,
    /// Only this meeting's events, when set.
    pub meeting_id: Option<String>,
    /// `getRaw=true`: events as they come from the server.
    pub raw: bool,
    /// `eventID`: a comma-separated filter, when set.
    pub event_ids: Option<String>,
}

#[derive(Clone, Debug)]
struct Meeting {
    id: String,
    name: String,
    running: bool,
    internal_id: String,
    create_time: u64,
    attendee_pw: String,
    moderator_pw: String,
    voice_bridge: u32,
    participants: u32,
}

pub(crate) struct BbbState {
    cfg: BbbConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    meetings: Vec<Meeting>,
    hooks: Vec<BbbHook>,
    next_hook: u64,
    next_voice: u32,
    chat_messages: u64,
}

impl Inner {
    fn new_meeting(&mut self, id: &str, name: &str, running: bool, now_ms: u64) -> Meeting {
        self.next_voice = self.next_voice.wrapping_add(1);
        let digest = bbb_checksum(ChecksumAlg::Sha1, "", id, "");
        Meeting {
            id: id.to_owned(),
            name: name.to_owned(),
            running,
            internal_id: format!("{digest}-{now_ms}"),
            create_time: now_ms,
            attendee_pw: "ap".to_owned(),
            moderator_pw: "mp".to_owned(),
            voice_bridge: 70_000 + self.next_voice % 30_000,
            participants: u32::from(running),
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut Meeting> {
        self.meetings.iter_mut().find(|m| m.id == id)
    }
}

impl BbbState {
    pub(crate) fn new(cfg: BbbConfig) -> Self {
        let mut inner = Inner {
            meetings: Vec::new(),
            hooks: Vec::new(),
            next_hook: 1,
            next_voice: 0,
            chat_messages: 0,
        };
        let now = unix_ms();
        for m in &cfg.meetings {
            let meeting = inner.new_meeting(&m.id, &m.name, m.running, now);
            inner.meetings.push(meeting);
        }
        BbbState {
            cfg,
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn meetings(&self) -> Vec<SimMeeting> {
        lock(&self.inner)
            .meetings
            .iter()
            .map(|m| SimMeeting::new(&m.id, &m.name, m.running))
            .collect()
    }

    pub(crate) fn upsert(&self, m: SimMeeting) {
        let mut g = lock(&self.inner);
        if let Some(existing) = g.find(&m.id) {
            existing.name = m.name;
            set_running(existing, m.running);
        } else {
            let meeting = g.new_meeting(&m.id, &m.name, m.running, unix_ms());
            g.meetings.push(meeting);
        }
    }

    pub(crate) fn set_running(&self, id: &str, running: bool) -> bool {
        let mut g = lock(&self.inner);
        match g.find(id) {
            Some(m) => {
                set_running(m, running);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut g = lock(&self.inner);
        let before = g.meetings.len();
        g.meetings.retain(|m| m.id != id);
        g.meetings.len() != before
    }

    pub(crate) fn hooks(&self) -> Vec<BbbHook> {
        lock(&self.inner).hooks.clone()
    }
}

fn set_running(m: &mut Meeting, running: bool) {
    m.running = running;
    m.participants = if running { m.participants.max(1) } else { 0 };
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/bigbluebutton/api", any(index))
        .route("/bigbluebutton/api/", any(index))
        .route("/bigbluebutton/api/{*call}", any(api))
        // The admin API's view of the meetings (see `crate::admin`).
        .route(
            "/__sim/meetings",
            get(|State(s): State<Arc<Shared>>| async move {
                json_answer(StatusCode::OK, &json!(s.bbb().meetings()))
            })
            .post(
                |State(s): State<Arc<Shared>>, Json(m): Json<SimMeeting>| async move {
                    s.bbb().upsert(m);
                    json_answer(StatusCode::OK, &json!(s.bbb().meetings()))
                },
            ),
        )
}

/// The unauthenticated version probe every BBB server answers.
async fn index() -> Response {
    xml("<response><returncode>SUCCESS</returncode><version>2.0</version><apiVersion>2.0</apiVersion><bbbVersion>3.0.0-botbox-sim</bbbVersion></response>".to_owned())
}

async fn api(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let call = path
        .strip_prefix("/bigbluebutton/api/")
        .unwrap_or_default()
        .to_owned();
    let raw_query = req.uri().query().unwrap_or_default().to_owned();
    let info = ReqInfo {
        provider: SimProvider::Bbb,
        endpoint: call.clone(),
        method: req.method().to_string(),
        path,
    };
    let conn = req.extensions().get::<ConnHandle>().cloned();
    // POST bodies (create's <modules>) are not part of the checksum and the
    // simulator ignores them; the body is never read.
    drop(req);
    guarded(&s, info, conn, rate_limited, || async {
        handle(&s, &call, &raw_query)
    })
    .await
}

/// BigBlueButton documents no rate limit; a proxy in front of it answers 429.
fn rate_limited() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))],
        "<html><head><title>429 Too Many Requests</title></head><body><center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center></body></html>\n",
    )
        .into_response()
}

const CALLS: [&str; 10] = [
    "create",
    "join",
    "end",
    "getMeetings",
    "isMeetingRunning",
    "getMeetingInfo",
    "sendChatMessage",
    "hooks/create",
    "hooks/destroy",
    "hooks/list",
];

fn handle(s: &Shared, call: &str, raw_query: &str) -> Handled {
    let Ok(params) = parse_query(raw_query) else {
        // Java's URLDecoder throws on a broken escape; the servlet container answers 400.
        return Handled::rejected(
            text(
                StatusCode::BAD_REQUEST,
                "Bad Request: malformed query string\n",
            ),
            "badQuery",
        );
    };
    if !CALLS.contains(&call) {
        return failed("unsupportedRequest", "This request is not supported.");
    }
    if !checksum_ok(&s.bbb().cfg, call, raw_query, first(&params, "checksum")) {
        return failed(
            "checksumError",
            "You did not pass the checksum security check",
        );
    }
    let p = |k: &str| first(&params, k).filter(|v| !v.is_empty());
    match call {
        "getMeetings" => get_meetings(s),
        "sendChatMessage" => {
            send_chat_message(s, p("meetingID"), first(&params, "message"), p("userName"))
        }
        "isMeetingRunning" => {
            let Some(id) = p("meetingID") else {
                return missing_meeting_id();
            };
            let g = lock(&s.bbb().inner);
            let running = g.meetings.iter().any(|m| m.id == id && m.running);
            Handled::ok(xml(format!(
                "<response><returncode>SUCCESS</returncode><running>{running}</running></response>"
            )))
        }
        "getMeetingInfo" => {
            let Some(id) = p("meetingID") else {
                return missing_meeting_id();
            };
            let g = lock(&s.bbb().inner);
            match g.meetings.iter().find(|m| m.id == id) {
                Some(m) => Handled::ok(xml(format!(
                    "<response><returncode>SUCCESS</returncode>{}</response>",
                    meeting_fields(m)
                ))),
                None => not_found(),
            }
        }
        "create" => create(
            s,
            p("meetingID"),
            p("name"),
            p("attendeePW"),
            p("moderatorPW"),
        ),
        "join" => join(
            s,
            p("meetingID"),
            p("fullName"),
            p("password"),
            p("role"),
            p("redirect"),
        ),
        "end" => {
            let Some(id) = p("meetingID") else {
                return missing_meeting_id();
            };
            let mut g = lock(&s.bbb().inner);
            let before = g.meetings.len();
            // The real end is asynchronous; the meeting is gone by the time
            // anyone could look.
            g.meetings.retain(|m| m.id != id);
            if g.meetings.len() == before {
                return not_found();
            }
            Handled::ok(xml("<response><returncode>SUCCESS</returncode><messageKey>sentEndMeetingRequest</messageKey><message>A request to end the meeting was sent. Please wait a few seconds, and then use the getMeetingInfo or isMeetingRunning API calls to verify that it was ended.</message></response>".to_owned()))
        }
        "hooks/create" => hooks_create(s, &params),
        "hooks/destroy" => {
            let Some(id) = p("hookID") else {
                return failed(
                    "missingParamHookID",
                    "You must specify a hookID in the parameters.",
                );
            };
            let mut g = lock(&s.bbb().inner);
            let before = g.hooks.len();
            g.hooks.retain(|h| h.id.to_string() != id);
            if g.hooks.len() == before {
                return failed("destroyMissingHook", "The hook informed was not found.");
            }
            Handled::ok(xml(
                "<response><returncode>SUCCESS</returncode><removed>true</removed></response>"
                    .to_owned(),
            ))
        }
        "hooks/list" => {
            let g = lock(&s.bbb().inner);
            let hooks: String = g
                .hooks
                .iter()
                .map(|h| {
                    format!(
                        "<hook><hookID>{}</hookID><callbackURL><![CDATA[{}]]></callbackURL>{}<permanentHook>false</permanentHook><rawData>{}</rawData></hook>",
                        h.id,
                        h.callback_url.replace("]]>", "]]]]><![CDATA[>"),
                        h.meeting_id
                            .as_deref()
                            .map(|m| format!("<meetingID><![CDATA[{}]]></meetingID>", m.replace("]]>", "]]]]><![CDATA[>")))
                            .unwrap_or_default(),
                        h.raw
                    )
                })
                .collect();
            Handled::ok(xml(format!(
                "<response><returncode>SUCCESS</returncode><hooks>{hooks}</hooks></response>"
            )))
        }
        _ => failed("unsupportedRequest", "This request is not supported."),
    }
}

/// bbb-web's `isChecksumSame`, step by step.
fn checksum_ok(cfg: &BbbConfig, call: &str, raw_query: &str, checksum: Option<&str>) -> bool {
    let Some(checksum) = checksum else {
        return false;
    };
    let rest = raw_query
        .replace(&format!("&checksum={checksum}"), "")
        .replace(&format!("checksum={checksum}&"), "")
        .replace(&format!("checksum={checksum}"), "");
    let Some(alg) = ChecksumAlg::from_hex_len(checksum.len()) else {
        return false;
    };
    if !cfg.supported.contains(&alg) {
        return false;
    }
    // Case-sensitive, as Java's String.equals on a lowercase hex digest.
    bbb_checksum(alg, call, &rest, &cfg.secret) == checksum
}

fn failed(key: &str, message: &str) -> Handled {
    Handled::rejected(
        xml(format!(
            "<response><returncode>FAILED</returncode><messageKey>{}</messageKey><message>{}</message></response>",
            xml_escape(key),
            xml_escape(message)
        )),
        key,
    )
}

fn missing_meeting_id() -> Handled {
    failed(
        "missingParamMeetingID",
        "You must specify a meeting ID for the meeting.",
    )
}

fn not_found() -> Handled {
    failed(
        "notFound",
        "We could not find a meeting with that meeting ID - perhaps the meeting is not yet running?",
    )
}

fn java_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn send_chat_message(
    s: &Shared,
    meeting_id: Option<&str>,
    message: Option<&str>,
    user_name: Option<&str>,
) -> Handled {
    let Some(meeting_id) = meeting_id else {
        return missing_meeting_id();
    };
    let message = message.unwrap_or_default();
    if message.is_empty() {
        return failed("validationError", "Message must not be empty");
    }
    if java_len(message) > MAX_MESSAGE {
        return failed(
            "validationError",
            "Message must be between 1 and 500 characters",
        );
    }
    if user_name.is_some_and(|u| java_len(u) > MAX_USER_NAME) {
        return failed(
            "validationError",
            "User name must be at most 255 characters",
        );
    }
    let mut g = lock(&s.bbb().inner);
    if !g.meetings.iter().any(|m| m.id == meeting_id && m.running) {
        return failed(
            "meetingNotFound",
            "The meeting does not exist or is no longer running.",
        );
    }
    g.chat_messages += 1;
    let provider_id = g.chat_messages.to_string();
    drop(g);
    let sender = user_name.unwrap_or("System");
    tracing::info!(
        target: "botbox_sim",
        "bbb      meeting={} <{}> {}",
        escape_for_log(meeting_id, 64),
        escape_for_log(sender, 64),
        escape_for_log(message, 200)
    );
    s.records.delivery(SimDelivery {
        seq: 0,
        provider: SimProvider::Bbb,
        endpoint: "sendChatMessage".to_owned(),
        target: Target::Meeting {
            id: meeting_id.to_owned(),
        },
        sender: Some(sender.to_owned()),
        content: json!({ "message": message }),
        provider_id,
        at: s.clock.now(),
        unix_ms: unix_ms(),
    });
    Handled::delivered(xml(
        "<response><returncode>SUCCESS</returncode><messageKey></messageKey><message></message></response>"
            .to_owned(),
    ))
}

fn get_meetings(s: &Shared) -> Handled {
    let g = lock(&s.bbb().inner);
    if g.meetings.is_empty() {
        return Handled::ok(xml("<response><returncode>SUCCESS</returncode><meetings/><messageKey>noMeetings</messageKey><message>no meetings were found on this server</message></response>".to_owned()));
    }
    let meetings: String = g
        .meetings
        .iter()
        .map(|m| format!("<meeting>{}</meeting>", meeting_fields(m)))
        .collect();
    Handled::ok(xml(format!(
        "<response><returncode>SUCCESS</returncode><meetings>{meetings}</meetings></response>"
    )))
}

fn meeting_fields(m: &Meeting) -> String {
    format!(
        "<meetingName>{name}</meetingName><meetingID>{id}</meetingID><internalMeetingID>{internal}</internalMeetingID>\
<createTime>{ct}</createTime><voiceBridge>{vb}</voiceBridge><dialNumber>613-555-1234</dialNumber>\
<attendeePW>{ap}</attendeePW><moderatorPW>{mp}</moderatorPW><running>{running}</running><duration>0</duration>\
<hasUserJoined>{joined}</hasUserJoined><recording>false</recording><hasBeenForciblyEnded>false</hasBeenForciblyEnded>\
<startTime>{ct}</startTime><endTime>0</endTime><participantCount>{n}</participantCount><listenerCount>0</listenerCount>\
<voiceParticipantCount>0</voiceParticipantCount><videoCount>0</videoCount><maxUsers>0</maxUsers><moderatorCount>0</moderatorCount>\
<attendees/><metadata/><isBreakout>false</isBreakout>",
        name = xml_escape(&m.name),
        id = xml_escape(&m.id),
        internal = xml_escape(&m.internal_id),
        ct = m.create_time,
        vb = m.voice_bridge,
        ap = xml_escape(&m.attendee_pw),
        mp = xml_escape(&m.moderator_pw),
        running = m.running,
        joined = m.participants > 0,
        n = m.participants,
    )
}

fn create(
    s: &Shared,
    id: Option<&str>,
    name: Option<&str>,
    attendee_pw: Option<&str>,
    moderator_pw: Option<&str>,
) -> Handled {
    let Some(id) = id else {
        return missing_meeting_id();
    };
    let len = java_len(id);
    if !(2..=256).contains(&len) || id.contains(',') {
        return failed(
            "validationError",
            "Meeting ID must be between 2 and 256 characters and must not contain commas",
        );
    }
    let name = name.unwrap_or(id);
    if !(2..=64).contains(&java_len(name)) {
        return failed(
            "validationError",
            "Meeting name must be between 2 and 64 characters",
        );
    }
    let mut g = lock(&s.bbb().inner);
    let (m, duplicate) = match g.meetings.iter().find(|m| m.id == id) {
        Some(m) => (m.clone(), true),
        None => {
            let mut m = g.new_meeting(id, name, false, unix_ms());
            if let Some(pw) = attendee_pw {
                m.attendee_pw = pw.to_owned();
            }
            if let Some(pw) = moderator_pw {
                m.moderator_pw = pw.to_owned();
            }
            g.meetings.push(m.clone());
            (m, false)
        }
    };
    let warning = if duplicate {
        "<messageKey>duplicateWarning</messageKey><message>This conference was already in existence and may currently be in progress.</message>"
    } else {
        "<messageKey></messageKey><message></message>"
    };
    Handled::ok(xml(format!(
        "<response><returncode>SUCCESS</returncode><meetingID>{}</meetingID><internalMeetingID>{}</internalMeetingID>\
<parentMeetingID>bbb-none</parentMeetingID><attendeePW>{}</attendeePW><moderatorPW>{}</moderatorPW><createTime>{}</createTime>\
<voiceBridge>{}</voiceBridge><dialNumber>613-555-1234</dialNumber><hasUserJoined>{}</hasUserJoined><duration>0</duration>\
<hasBeenForciblyEnded>false</hasBeenForciblyEnded>{warning}</response>",
        xml_escape(&m.id),
        xml_escape(&m.internal_id),
        xml_escape(&m.attendee_pw),
        xml_escape(&m.moderator_pw),
        m.create_time,
        m.voice_bridge,
        m.participants > 0,
    )))
}

/// Joining is how a meeting starts running: the simulator treats the join
/// as if the user's browser followed the URL at once.
fn join(
    s: &Shared,
    id: Option<&str>,
    full_name: Option<&str>,
    password: Option<&str>,
    role: Option<&str>,
    redirect: Option<&str>,
) -> Handled {
    let Some(id) = id else {
        return missing_meeting_id();
    };
    let Some(full_name) = full_name else {
        return failed(
            "missingParamFullName",
            "You must specify a name for the attendee who will be joining the meeting.",
        );
    };
    let mut g = lock(&s.bbb().inner);
    let Some(m) = g.find(id) else {
        return failed(
            "invalidMeetingIdentifier",
            "The meeting ID that you supplied did not match any existing meetings",
        );
    };
    let password_ok = match (password, role) {
        (Some(pw), _) => pw == m.attendee_pw || pw == m.moderator_pw,
        (None, Some(r)) => {
            ["MODERATOR", "VIEWER", "ATTENDEE"].contains(&r.to_ascii_uppercase().as_str())
        }
        (None, None) => false,
    };
    if !password_ok {
        return failed(
            "invalidPassword",
            "You either did not supply a password or the password supplied is neither the attendee or moderator password for this conference.",
        );
    }
    m.running = true;
    m.participants = m.participants.saturating_add(1);
    let token = bbb_checksum(
        ChecksumAlg::Sha1,
        full_name,
        id,
        &m.participants.to_string(),
    );
    let session = &token[..16];
    let url = format!("/html5client/join?sessionToken={session}");
    if redirect.is_some_and(|r| r.eq_ignore_ascii_case("false")) {
        Handled::ok(xml(format!(
            "<response><returncode>SUCCESS</returncode><messageKey>successfullyJoined</messageKey><message>You have joined successfully.</message>\
<meeting_id>{}</meeting_id><user_id>w_{}</user_id><auth_token>{}</auth_token><session_token>{session}</session_token><url>{}</url></response>",
            xml_escape(&m.internal_id),
            &token[16..28],
            &token[28..40],
            xml_escape(&url)
        )))
    } else {
        Handled::ok((StatusCode::FOUND, [(header::LOCATION, url)], String::new()).into_response())
    }
}

fn hooks_create(s: &Shared, params: &[(String, String)]) -> Handled {
    let Some(callback) = first(params, "callbackURL").filter(|v| !v.is_empty()) else {
        return failed(
            "missingParamCallbackURL",
            "You must specify a callbackURL in the parameters.",
        );
    };
    let meeting_id = first(params, "meetingID")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let raw = first(params, "getRaw").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let event_ids = first(params, "eventID")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let mut g = lock(&s.bbb().inner);
    if let Some(h) = g
        .hooks
        .iter()
        .find(|h| h.callback_url == callback && h.meeting_id == meeting_id)
    {
        let id = h.id;
        return Handled::rejected(
            xml(format!(
                "<response><returncode>FAILED</returncode><hookID>{id}</hookID><messageKey>duplicateWarning</messageKey><message>There is already a hook for this callback URL.</message></response>"
            )),
            "duplicateWarning",
        );
    }
    let id = g.next_hook;
    g.next_hook += 1;
    g.hooks.push(BbbHook {
        id,
        callback_url: callback.to_owned(),
        meeting_id,
        raw,
        event_ids,
    });
    Handled::ok(xml(format!(
        "<response><returncode>SUCCESS</returncode><hookID>{id}</hookID><permanentHook>false</permanentHook><rawData>{raw}</rawData></response>"
    )))
}

// ---------------------------------------------------------------------------
// What this simulator is configured with (`SimConfig.bbb`).

/// BigBlueButton checksum hash functions; the server picks one by the
/// checksum's length (40/64/96/128 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumAlg {
    pub const ALL: [ChecksumAlg; 4] = [
        ChecksumAlg::Sha1,
        ChecksumAlg::Sha256,
        ChecksumAlg::Sha384,
        ChecksumAlg::Sha512,
    ];

    /// Length of the lowercase hex digest, which is how the server tells them apart.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlg::Sha1 => 40,
            ChecksumAlg::Sha256 => 64,
            ChecksumAlg::Sha384 => 96,
            ChecksumAlg::Sha512 => 128,
        }
    }

    pub fn from_hex_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hex_len() == len)
    }
}

/// The BigBlueButton simulator's config.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BbbConfig {
    /// The shared secret (`securitySalt` in bbb-web.properties).
    pub secret: String,
    /// `supportedChecksumAlgorithms`: a checksum of another length is a `checksumError`.
    pub supported: Vec<ChecksumAlg>,
    /// Meetings that exist when the simulator starts.
    pub meetings: Vec<SimMeeting>,
}

/// A meeting seeded into the BigBlueButton simulator (or added through the handle).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMeeting {
    pub id: String,
    pub name: String,
    /// Only running meetings accept `sendChatMessage`.
    pub running: bool,
}

impl SimMeeting {
    pub fn new(id: impl Into<String>, name: impl Into<String>, running: bool) -> Self {
        SimMeeting {
            id: id.into(),
            name: name.into(),
            running,
        }
    }
}

impl Default for BbbConfig {
    fn default() -> Self {
        BbbConfig {
            secret: "sim-bbb-secret-8f3c1e0b7a5d".to_owned(),
            supported: ChecksumAlg::ALL.to_vec(),
            meetings: vec![
                SimMeeting::new("room-1", "Sim Lobby", true),
                SimMeeting::new("room-2", "Sim Lecture Hall", true),
                SimMeeting::new("room-idle", "Sim Idle Room", false),
            ],
        }
    }
}

impl fmt::Debug for BbbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BbbConfig")
            .field("secret", &REDACTED)
            .field("supported", &self.supported)
            .field("meetings", &self.meetings)
            .finish()
    }
}

/// The BigBlueButton simulator, for [`crate::kind::KINDS`].
pub(crate) const KIND: SimKind = SimKind {
    provider: SimProvider::Bbb,
    section_name: "bbb",
    base_path: "/bigbluebutton/api",
    port: |p| &mut p.bbb,
    validate: |cfg| {
        if cfg.bbb.supported.is_empty() {
            return Err("bbb.supported must name at least one checksum algorithm");
        }
        Ok(())
    },
    state: |cfg, _, _| Box::new(BbbState::new(cfg.bbb.clone())),
    router,
    unrouted_path: keep_path,
    text: |content| content.get("message")?.as_str().map(str::to_owned),
    section: |cfg, name, url, secret| {
        format!(
            "[providers.{name}]\nkind = \"bigbluebutton\"\nurl = {}\nsecret = {}\nchecksum = \"sha256\"\n",
            toml_str(url),
            secret("bbb-secret", &cfg.bbb.secret)
        )
    },
    credentials: |cfg| vec![cfg.bbb.secret.clone()],
    error_answer,
};

/// BigBlueButton answers an error as a FAILED response with its
/// `messageKey`, HTTP 200 unless `status` says otherwise.
fn error_answer(key: &str, status: Option<u16>, message: &str) -> Response {
    let mut answer = failed(key, message).response;
    if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
        *answer.status_mut() = status;
    }
    answer
}

impl Shared {
    pub(crate) fn bbb(&self) -> &BbbState {
        self.state()
    }
}

/// What the [`Sim`](crate::Sim) handle offers for this simulator alone.
impl crate::Sim {
    /// `http://127.0.0.1:P/bigbluebutton/api`
    pub fn bbb_url(&self) -> String {
        self.url(SimProvider::Bbb)
    }
    /// BigBlueButton meetings as they stand now.
    pub fn bbb_meetings(&self) -> Vec<SimMeeting> {
        self.shared.bbb().meetings()
    }
    /// Adds a meeting, or updates the name and running state of an existing one.
    pub fn bbb_upsert_meeting(&self, meeting: SimMeeting) {
        self.shared.bbb().upsert(meeting);
    }
    /// Starts or stops a meeting; false if there is no such meeting.
    pub fn bbb_set_running(&self, id: &str, running: bool) -> bool {
        self.shared.bbb().set_running(id, running)
    }
    /// Removes a meeting; false if there is no such meeting.
    pub fn bbb_remove_meeting(&self, id: &str) -> bool {
        self.shared.bbb().remove(id)
    }
    /// Callbacks registered through `hooks/create`.
    pub fn bbb_hooks(&self) -> Vec<BbbHook> {
        self.shared.bbb().hooks()
    }
    /// Sends a bbb-webhooks event (a JSON array of `{"data": …}`) to every
    /// hook registered with `hooks/create` (only those for this meeting or
    /// for all meetings), signed with the shared secret as bbb-webhooks
    /// does. Returns each hook's URL and reply.
    pub async fn bbb_send_event(
        &self,
        meeting_id: &str,
        event: &serde_json::Value,
    ) -> Vec<(String, std::io::Result<callbacks::CallbackReply>)> {
        callbacks::bbb_deliver(self.bbb_hooks(), &self.cfg.bbb.secret, meeting_id, event).await
    }

    /// Demo chatter: every `period` (real time), someone writes the next of
    /// `lines` (round robin) in `meeting_id`'s public chat, sent to every
    /// registered hook. Stops with the simulator; refused or failed
    /// callbacks are logged at debug level only.
    pub fn bbb_start_chatter(&self, meeting_id: &str, lines: Vec<String>, period: Duration) {
        if lines.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let secret = self.cfg.bbb.secret.clone();
        let meeting = meeting_id.to_owned();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            for i in 0.. {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let text = &lines[i % lines.len()];
                let event = callbacks::bbb_chat_event(&meeting, "sim-user", "Ada (sim)", text);
                tracing::info!(target: "botbox_sim", "bbb      meeting={meeting} <Ada (sim)> {}   (chat event to the registered hooks)", escape_for_log(text, 200));
                for (url, reply) in
                    callbacks::bbb_deliver(shared.bbb().hooks(), &secret, &meeting, &event).await
                {
                    if !matches!(&reply, Ok(r) if r.status == 200) {
                        tracing::debug!(target: "botbox_sim", url, ?reply, "chatter callback not accepted");
                    }
                }
            }
        });
    }

    /// Someone writes `text` in a meeting's public chat: the
    /// `chat-group-message-sent` event goes to every registered hook.
    pub async fn bbb_send_chat(
        &self,
        meeting_id: &str,
        user_id: &str,
        user_name: &str,
        text: &str,
    ) -> Vec<(String, std::io::Result<callbacks::CallbackReply>)> {
        let event = callbacks::bbb_chat_event(meeting_id, user_id, user_name, text);
        self.bbb_send_event(meeting_id, &event).await
    }
}
