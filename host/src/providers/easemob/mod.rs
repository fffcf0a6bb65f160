//! Easemob IM: broadcasts to all users, to online users, or to every
//! active chat room; and replies into the one chat room, group or
//! one-to-one conversation a chat message came from, with the ordinary
//! message API of that kind.
//!
//! Requests carry an app token (`Authorization: Bearer …`) fetched with the
//! client id and secret. Easemob blocks accounts that fetch tokens too
//! often, so the token is cached until shortly before it expires, fetched by
//! one request at a time (concurrent sends wait for that one fetch instead
//! of starting their own), and refetched only when the server refuses it
//! with a 401; the request is then retried once.

mod body;
pub(crate) mod inbound;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use self::body::{
    MAX_BODY_BYTES, MAX_USER_ID_BYTES, ReplyKind, Target, priority_name, reply_body, request_body,
};
use super::common::{self, CopiedUrl, Options, Reply, unix_now, write_url};
use super::target::{self, Form, Forms};
use super::{ALL_CONTENT_KINDS, ChannelRules, DeliveryOutcome, Part, Provider, ProviderContext};
use crate::config::{ChannelConfig, ConfigIssue, Secret};
use crate::providers::limits::ThrottleSpec;
use crate::wit::types::{BroadcastError, Message};

/// How long a token is trusted when the server does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The `easemob` kind's registration: outbound and inbound.
pub const KIND: super::Kind = super::Kind {
    name: "easemob",
    build: |key, options, context| {
        Ok(std::sync::Arc::new(Easemob::from_options(
            key, options, context,
        )?))
    },
    inbound: Some(inbound::KIND),
};

/// An Easemob (Agora Chat) app.
pub struct Easemob {
    /// `{url}/{org}/{app}`.
    base: String,
    client_id: Secret,
    client_secret: Secret,
    http: reqwest::Client,
    /// The cached app token. Held across the fetch, which is what makes
    /// the fetch single-flight.
    token: tokio::sync::Mutex<Option<AppToken>>,
}

struct AppToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

fn is_path_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// What an Easemob channel may target: the three broadcasts. The plain
/// strings older configs used still read.
const TARGETS: Forms = Forms {
    provider: "an easemob channel",
    forms: &[
        Form::Every {
            kind: "users",
            scope: "all",
            aliases: &[],
            reaches: "every user of the app, with /messages/broadcast",
        },
        Form::Every {
            kind: "users",
            scope: "online",
            aliases: &[],
            reaches: "the users online, with /messages/users/broadcast",
        },
        Form::Every {
            kind: "chatrooms",
            scope: "all",
            aliases: &[],
            reaches: "every active chat room, with /messages/chatrooms/broadcast",
        },
    ],
    default: None,
    legacy: &[("all-users", 0), ("online-users", 1), ("chatrooms", 2)],
};

/// The REST host, and the org and app when the URL names them, from what
/// an operator copies: the host the console's app overview shows
/// (`https://a1.easemob.com`), or a request URL's base
/// (`https://a1.easemob.com/{org}/{app}`), with or without a trailing
/// slash. Every request is `https://{host}/{org_name}/{app_name}/…`
/// (<https://doc.easemob.com/document/server-side/overview.html>).
pub(crate) fn rest_host(url: &CopiedUrl) -> Result<(String, Option<(String, String)>), String> {
    let with_names = || format!("{}/{{org}}/{{app}}", url.origin);
    match url.parts().as_slice() {
        [] => Ok((url.origin.clone(), None)),
        [org, app] if is_path_name(org) && is_path_name(app) => {
            Ok((url.origin.clone(), Some((org.to_string(), app.to_string()))))
        }
        [org, app, ..] if is_path_name(org) && is_path_name(app) => Err(format!(
            "goes past the app's address; botbox adds each API path (/token, /messages/…) \
             itself: {}",
            write_url(&url.join(&[org, app]))
        )),
        _ => Err(format!(
            "is not an Easemob REST address: write url = \"{}\" with org and app, or url = \
             \"{}\"",
            url.origin,
            with_names()
        )),
    }
}

/// Config problems as (channel key, message).
type Problems = Vec<(&'static str, String)>;

/// A channel's settings: who it reaches and its default priority.
fn channel_settings(channel: &ChannelConfig) -> Result<(Target, Option<String>), Problems> {
    let mut problems: Problems = Vec::new();
    let target = match TARGETS.parse(channel.target.as_ref()) {
        Ok(target::Target::Every {
            kind: "users",
            scope: "all",
        }) => Ok(Target::AllUsers),
        Ok(target::Target::Every {
            kind: "users",
            scope: "online",
        }) => Ok(Target::OnlineUsers),
        Ok(target::Target::Every {
            kind: "chatrooms",
            scope: "all",
        }) => Ok(Target::Chatrooms),
        // `TARGETS` has no other form; should one be added, it is refused
        // here until a broadcast is chosen for it.
        Ok(other) => Err(format!("{other:?} has no Easemob broadcast")),
        Err(message) => Err(message),
    };
    let target = match target {
        Ok(target) => Some(target),
        Err(message) => {
            problems.push(("target", message));
            None
        }
    };
    let priority = match channel.options.get("priority") {
        None => None,
        Some(toml::Value::String(p)) if matches!(p.as_str(), "high" | "normal" | "low") => {
            Some(p.clone())
        }
        Some(_) => {
            problems.push(("priority", "must be \"high\", \"normal\" or \"low\"".into()));
            None
        }
    };
    if priority.is_some() && target.is_some_and(|t| t != Target::Chatrooms) {
        problems.push((
            "priority",
            "only a chatrooms channel has a priority (chatroom_msg_level)".into(),
        ));
    }
    match target {
        Some(t) if problems.is_empty() => Ok((t, priority)),
        _ => Err(problems),
    }
}

/// Where one request goes, and what a 429 there means.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Route {
    path: &'static str,
    what: &'static str,
    /// The shortest documented window, which a 429 means we hit.
    window: Duration,
}

impl Target {
    fn route(self) -> Route {
        Route {
            path: self.path(),
            what: match self {
                Target::AllUsers => "easemob all-users broadcast",
                Target::OnlineUsers => "easemob online-users broadcast",
                Target::Chatrooms => "easemob chat-rooms broadcast",
            },
            window: self.window(),
        }
    }
}

impl ReplyKind {
    fn route(self) -> Route {
        Route {
            path: self.path(),
            what: match self {
                ReplyKind::Room => "easemob chat-room message",
                ReplyKind::Group => "easemob group message",
                ReplyKind::User => "easemob one-to-one message",
            },
            window: Duration::from_secs(1),
        }
    }
}

/// A message's request: where it goes and its body.
fn request(
    channel: &ChannelConfig,
    message: &Message,
) -> Result<(Route, serde_json::Value), String> {
    let (target, default_level) = channel_settings(channel)
        .map_err(|_| "the channel's Easemob target or priority is invalid".to_string())?;
    let level = level_for(message, default_level.as_deref());
    match &message.reply_to {
        Some(conversation) => {
            let (kind, to) = ReplyKind::parse(conversation).ok_or_else(|| {
                "reply-to must be the conversation of an Easemob chat message: room:ID, group:ID or user:ID".to_string()
            })?;
            Ok((kind.route(), reply_body(kind, to, level, message)?))
        }
        None => Ok((target.route(), request_body(target, level, message)?)),
    }
}

/// Time until the next midnight UTC. Easemob's daily quotas reset "each
/// day" without saying in which time zone.
fn until_next_utc_midnight(now_unix: u64) -> Duration {
    Duration::from_secs(86_400 - now_unix % 86_400)
}

impl Easemob {
    /// Builds the provider from its `[providers.NAME]` options (`key` is
    /// `providers.NAME`), reporting every problem with its key.
    pub fn from_options(
        key: &str,
        options: &toml::Table,
        context: &ProviderContext,
    ) -> Result<Easemob, Vec<ConfigIssue>> {
        let mut o = Options::account(
            options,
            key,
            &[
                "url",
                "org",
                "app",
                "client_id",
                "client_secret",
                common::ALLOW_PLAINTEXT,
            ],
        );
        // The org and app may come with the URL; then the keys are optional.
        let mut named: Option<(String, String)> = None;
        let url = o.api_url("url", |url| {
            let (host, names) = rest_host(url)?;
            named = names;
            Ok(host)
        });
        let path_part = |o: &mut Options, field: &str, in_url: Option<&str>| {
            let value = match (o.string(field, in_url.is_none()), in_url) {
                (None, in_url) => return in_url.map(str::to_owned),
                (Some(value), Some(in_url)) if value != in_url => {
                    o.issue(
                        field,
                        format!(
                            "is not the {field} the url names (`{in_url}`); remove {field} or \
                             make the two agree"
                        ),
                    );
                    return None;
                }
                (Some(value), _) => value,
            };
            if is_path_name(&value) {
                Some(value)
            } else {
                o.issue(
                    field,
                    "must be letters, digits, '-', '_' or '.', as the console shows it",
                );
                None
            }
        };
        let (org_in_url, app_in_url) = match &named {
            Some((org, app)) => (Some(org.as_str()), Some(app.as_str())),
            None => (None, None),
        };
        let org = path_part(&mut o, "org", org_in_url);
        let app = path_part(&mut o, "app", app_in_url);
        let client_id = o.secret("client_id", true, &context.base_dir);
        let client_secret = o.secret("client_secret", true, &context.base_dir);
        match (url, org, app, client_id, client_secret) {
            (Some(url), Some(org), Some(app), Some(client_id), Some(client_secret))
                if o.issues.is_empty() =>
            {
                Ok(Easemob {
                    base: format!("{url}/{org}/{app}"),
                    client_id,
                    client_secret,
                    http: context.http.clone(),
                    token: tokio::sync::Mutex::new(None),
                })
            }
            _ => Err(o.issues),
        }
    }

    /// A token to use: the cached one, unless it is due or it is the one
    /// the server just refused (`refused`), in which case one new token is
    /// fetched while every other caller waits for it.
    async fn token(&self, refused: Option<&Secret>) -> Result<Secret, DeliveryOutcome> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let was_refused = refused.is_some_and(|r| r.expose() == t.value.expose());
            if !was_refused && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        *cached = None;
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<AppToken, DeliveryOutcome> {
        let what = "easemob token";
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id.expose(),
            "client_secret": self.client_secret.expose(),
        });
        let response = self
            .http
            .post(format!("{}/token", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| common::transport_failure(what, e))?;
        // The token itself is new, so it is not among what is redacted.
        let sent = [self.client_id.expose(), self.client_secret.expose()];
        let reply = common::read_reply(what, response, &sent).await?;
        if (200..300).contains(&reply.status) {
            let answer: Option<TokenAnswer> = serde_json::from_slice(&reply.body).ok();
            let Some((token, expires_in)) = answer.and_then(|a| {
                a.access_token
                    .filter(|t| !t.is_empty())
                    .map(|t| (t, a.expires_in))
            }) else {
                return Err(DeliveryOutcome::RetryLater {
                    after: None,
                    reason: format!(
                        "{what}: the answer has no access_token: {}",
                        reply.snippet()
                    ),
                });
            };
            let lifetime = match expires_in {
                Some(secs) if secs > 0 => Duration::from_secs(secs as u64),
                _ => DEFAULT_TOKEN_LIFETIME,
            };
            tracing::debug!(
                lifetime_secs = lifetime.as_secs(),
                "easemob: fetched an app token"
            );
            // Renew at 90% of the lifetime so a send never races the expiry.
            return Ok(AppToken {
                value: Secret::new(token),
                refresh_at: Instant::now() + lifetime.mul_f64(0.9),
            });
        }
        let e = parse_error(&reply);
        Err(if reply.is_transient() {
            DeliveryOutcome::RetryLater {
                after: reply.retry_after,
                reason: format!("{what}: HTTP {}: {}", reply.status, describe(&e, &reply)),
            }
        } else {
            // The token endpoint's documented refusals (the "common error
            // codes" page, doc.easemob.com/document/server-side/error.html).
            let why = match e.error.as_deref() {
                Some("invalid_grant") => "the client id or secret is wrong",
                Some("organization_application_not_found") => {
                    "Easemob has no such app; check the org and app in url"
                }
                _ => "the client id and secret were refused",
            };
            DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: HTTP {}: {why}: {}",
                    reply.status,
                    describe(&e, &reply)
                ),
            }
        })
    }

    async fn post(
        &self,
        route: Route,
        body: &serde_json::Value,
        token: &Secret,
    ) -> Result<Reply, DeliveryOutcome> {
        let what = route.what;
        let response = self
            .http
            .post(format!("{}/{}", self.base, route.path))
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| common::transport_failure(what, e))?;
        let secrets = [
            self.client_id.expose(),
            self.client_secret.expose(),
            token.expose(),
        ];
        common::read_reply(what, response, &secrets).await
    }
}

fn parse_error(reply: &Reply) -> ErrorAnswer {
    serde_json::from_slice(&reply.body).unwrap_or_default()
}

fn describe(e: &ErrorAnswer, reply: &Reply) -> String {
    match (&e.error, &e.error_description) {
        (Some(code), Some(text)) => format!(
            "{}: {}",
            common::provider_code(code),
            common::provider_text(text)
        ),
        (None, Some(text)) => common::provider_text(text),
        (Some(code), None) => common::provider_code(code),
        (None, None) => reply.snippet(),
    }
}

/// What an answer (other than a first 401) means: the broadcast pages'
/// codes (seed `002_…`) and the REST API's common ones
/// (<https://doc.easemob.com/document/server-side/error.html>).
fn interpret(route: Route, reply: &Reply, now_unix: u64) -> DeliveryOutcome {
    let what = route.what;
    if (200..300).contains(&reply.status) {
        // A 200 is the message going out; the body only carries its id.
        // An unreadable body must not cause a resend of a 3-a-day call.
        let ids = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .map(|v| message_ids(&v["data"]))
            .unwrap_or_default();
        return DeliveryOutcome::Delivered { provider_ids: ids };
    }
    let e = parse_error(reply);
    let said = describe(&e, reply);
    let code = e
        .error
        .as_deref()
        .map(common::provider_code)
        .unwrap_or_else(|| format!("http-{}", reply.status));
    match reply.status {
        429 => DeliveryOutcome::Throttled {
            after: Some(reply.retry_after.unwrap_or(route.window)),
            limit: crate::providers::RateLimited::Endpoint,
            reason: format!("{what}: rate limited (HTTP 429): {said}"),
        },
        403 if e
            .error_description
            .as_deref()
            .is_some_and(|d| d.contains("limit exceeded")) =>
        {
            DeliveryOutcome::QuotaExhausted {
                until: Some(until_next_utc_midnight(now_unix)),
                reason: format!(
                    "{what}: daily limit reached (HTTP 403: {said}); Easemob does not document when the day resets, so the host waits until midnight UTC"
                ),
            }
        }
        403 if e
            .error_description
            .as_deref()
            .is_some_and(|d| d.contains("unopened")) =>
        {
            DeliveryOutcome::Rejected {
                code,
                reason: format!(
                    "{what}: broadcasting is not enabled for this app; Easemob's sales team turns it on (HTTP 403: {said})"
                ),
            }
        }
        401 => DeliveryOutcome::CredentialsExpired {
            reason: format!(
                "{what}: a freshly fetched app token was refused too (HTTP 401: {said})"
            ),
        },
        413 => DeliveryOutcome::Rejected {
            code,
            reason: format!("{what}: the request is too large (HTTP 413): {said}"),
        },
        // "Could not find application for {org}/{app}": the account's url
        // is wrong, which only the operator can fix.
        400 if e.error.as_deref() == Some("organization_application_not_found") => {
            DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: Easemob has no such app; check the org and app in url (HTTP 400: {said})"
                ),
            }
        }
        400 => DeliveryOutcome::Rejected {
            code,
            reason: format!("{what}: the request was refused as malformed (HTTP 400): {said}"),
        },
        403 => DeliveryOutcome::Rejected {
            code,
            reason: format!("{what}: Easemob forbids this operation (HTTP 403): {said}"),
        },
        404 => DeliveryOutcome::Rejected {
            code,
            reason: format!(
                "{what}: no such API, or the group, room or user does not exist (HTTP 404): {said}"
            ),
        },
        405 | 415 => DeliveryOutcome::Rejected {
            code,
            reason: format!(
                "{what}: Easemob does not take the request's method or content type (HTTP {}): {said}",
                reply.status
            ),
        },
        // 500s Easemob documents as the request's own fault: the URL or the
        // method is wrong, so a retry would fail the same way.
        500 if matches!(
            e.error.as_deref(),
            Some("web_application" | "unsupported_service_operation")
        ) =>
        {
            DeliveryOutcome::Rejected {
                code,
                reason: format!(
                    "{what}: Easemob does not serve this request; check url (HTTP 500): {said}"
                ),
            }
        }
        s if (500..=599).contains(&s) || s == 408 => DeliveryOutcome::RetryLater {
            after: reply.retry_after,
            reason: format!("{what}: HTTP {s}: {said}"),
        },
        s => DeliveryOutcome::Rejected {
            code,
            reason: format!("{what}: refused (HTTP {s}): {said}"),
        },
    }
}

/// `data.id` (a number too large for a double), a list of ids, or for the
/// message API a map of conversation to message id.
fn message_ids(data: &serde_json::Value) -> Vec<String> {
    let one = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(common::provider_code(s)),
        _ => None,
    };
    match data {
        serde_json::Value::Array(items) => items
            .iter()
            .take(100)
            .filter_map(|i| one(&i["id"]).or_else(|| one(i)))
            .collect(),
        serde_json::Value::Object(map) if !map.contains_key("id") => {
            map.values().take(100).filter_map(one).collect()
        }
        other => one(&other["id"]).into_iter().collect(),
    }
}

#[async_trait]
impl Provider for Easemob {
    fn kind(&self) -> &'static str {
        "easemob"
    }

    fn check_channel(&self, name: &str, channel: &ChannelConfig) -> Vec<ConfigIssue> {
        let prefix = format!("channels.{name}");
        let mut issues = Options::new(&channel.options, &prefix, &["priority"]).issues;
        if let Err(problems) = channel_settings(channel) {
            issues.extend(problems.into_iter().map(|(field, message)| ConfigIssue {
                key: format!("{prefix}.{field}"),
                message,
            }));
        }
        if let Some(sender) = &channel.default_sender
            && (sender.is_empty() || sender.len() > MAX_USER_ID_BYTES)
        {
            issues.push(ConfigIssue {
                key: format!("{prefix}.sender"),
                message: format!("must be an Easemob user ID of 1 to {MAX_USER_ID_BYTES} bytes"),
            });
        }
        issues
    }

    fn rules(&self, _channel: &ChannelConfig) -> ChannelRules {
        ChannelRules {
            accepts: ALL_CONTENT_KINDS.to_vec(),
            // The real bound is 5 KB of request body, checked in validate.
            max_text_chars: MAX_BODY_BYTES as u32,
            splits_long_text: false,
            max_split_parts: 1,
            max_sender_chars: MAX_USER_ID_BYTES as u32,
        }
    }

    fn validate(&self, channel: &ChannelConfig, message: &Message) -> Result<(), BroadcastError> {
        if channel_settings(channel).is_err() {
            return Err(BroadcastError::Internal(
                "the channel's Easemob settings are invalid".into(),
            ));
        }
        let (_, body) = request(channel, message).map_err(BroadcastError::Invalid)?;
        let bytes = body.to_string().len();
        if bytes > MAX_BODY_BYTES {
            return Err(BroadcastError::Invalid(format!(
                "the Easemob request would be {bytes} bytes with ext; the limit is {MAX_BODY_BYTES}"
            )));
        }
        Ok(())
    }

    fn endpoint(&self, channel: &ChannelConfig) -> &'static str {
        match channel_settings(channel) {
            Ok((target, _)) => target.endpoint(),
            // Unreachable after check_channel; the strictest limit is safe.
            Err(_) => Target::AllUsers.endpoint(),
        }
    }

    fn reply_endpoints(&self, _channel: &ChannelConfig) -> &'static [&'static str] {
        ReplyKind::ENDPOINTS
    }

    fn route(&self, channel: &ChannelConfig, message: &Message) -> &'static str {
        match message.reply_to.as_deref().and_then(ReplyKind::parse) {
            Some((kind, _)) => kind.endpoint(),
            None => self.endpoint(channel),
        }
    }

    fn key_throttle(&self, endpoint: &str) -> Option<ThrottleSpec> {
        // A room drops messages past 20 a second ("每秒发送的消息数量默认
        // 超过 20 条，则会触发消息丢弃逻辑"): each room has its own 20.
        (endpoint == "chatroom-messages").then(|| ThrottleSpec::windows(&[(20, 1000)]))
    }

    fn throttle_key(&self, endpoint: &str, part: &Part) -> Option<String> {
        // A reply's room is its `reply-to` (`room:{id}`).
        if endpoint == "chatroom-messages" {
            part.message.reply_to.clone()
        } else {
            None
        }
    }

    fn default_throttle(&self, endpoint: &str) -> ThrottleSpec {
        const MIN: u64 = 60_000;
        match endpoint {
            // 100 calls (and messages) a second for the app ("发送聊天室消息
            // … 100 条/秒 - 100 次/秒", Restful API 调用频率限制,
            // https://doc.easemob.com/document/server-side/limitationapi.html).
            // Each room's own 20 a second is `key_throttle`.
            "chatroom-messages" => ThrottleSpec::windows(&[(100, 1000)]),
            // 20 calls a second ("20 次/秒").
            "chatgroup-messages" => ThrottleSpec::windows(&[(20, 1000)]),
            // 100 calls a second, 6,000 messages a minute.
            "user-messages" => ThrottleSpec::windows(&[(100, 1000), (6000, MIN)]),
            // The broadcasts' daily quotas count Easemob's UTC calendar day:
            // "API 限流周期按照 UTC 时间计算，即当日的 00:00:00 至次日的
            // 00:00:00" (limitationapi.html, "API 调用频率限制周期").
            // 1 per 30 minutes, 3 a day.
            "all-users-broadcast" => ThrottleSpec::windows_and_utc_day(&[(1, 30 * MIN)], 3),
            // 1 a minute, 50 a day.
            "online-users-broadcast" => ThrottleSpec::windows_and_utc_day(&[(1, MIN)], 50),
            // 1 a second, 10 a minute, 100 a day.
            _ => ThrottleSpec::windows_and_utc_day(&[(1, 1000), (10, MIN)], 100),
        }
    }

    async fn plan(
        &self,
        _channel_name: &str,
        _channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome> {
        // Easemob's broadcasts take no dedup value.
        Ok(vec![Part {
            target: String::new(),
            message: message.clone(),
            dedup_key: None,
            merged: Vec::new(),
        }])
    }

    async fn prepare(&self, _channel: &ChannelConfig) -> Result<(), DeliveryOutcome> {
        self.token(None).await.map(|_| ())
    }

    async fn send(&self, channel: &ChannelConfig, part: &Part) -> DeliveryOutcome {
        let (route, body) = match request(channel, &part.message) {
            Ok(r) => r,
            Err(why) => {
                return DeliveryOutcome::Rejected {
                    code: "invalid".into(),
                    reason: why,
                };
            }
        };
        let mut used = Vec::new();
        let outcome = self.deliver(route, &body, &mut used).await;
        let mut secrets = vec![self.client_id.expose(), self.client_secret.expose()];
        secrets.extend(used.iter().map(Secret::expose));
        common::scrub(outcome, &secrets)
    }
}

impl Easemob {
    /// One request, with the refetch-once rule for a refused token.
    /// `used` collects the tokens sent, for scrubbing the outcome.
    async fn deliver(
        &self,
        route: Route,
        body: &serde_json::Value,
        used: &mut Vec<Secret>,
    ) -> DeliveryOutcome {
        let first = match self.token(None).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        used.push(first.clone());
        let reply = match self.post(route, body, &first).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if reply.status != 401 {
            return interpret(route, &reply, unix_now());
        }
        tracing::info!("easemob: app token refused; fetching a new one and retrying once");
        let second = match self.token(Some(&first)).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        used.push(second.clone());
        match self.post(route, body, &second).await {
            // A second 401 maps to CredentialsExpired.
            Ok(reply) => interpret(route, &reply, unix_now()),
            Err(outcome) => outcome,
        }
    }
}

/// `chatroom_msg_level`: the message's priority, else the channel's.
fn level_for<'a>(message: &Message, channel_default: Option<&'a str>) -> Option<&'a str> {
    match message.options.as_ref().and_then(|o| o.priority) {
        Some(p) => Some(priority_name(p)),
        None => channel_default,
    }
}

/// For `fuzz/` only: the answer readers and the request builder on arbitrary input.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz(status: u16, answer: &[u8], message: &Message) {
    let reply = Reply {
        status,
        body: answer.to_vec(),
        retry_after: None,
    };
    for target in ["all-users", "online-users", "chatrooms"] {
        if let Some(target) = Target::parse(target) {
            let _ = interpret(target.route(), &reply, unix_now());
            let _ = request_body(target, level_for(message, Some("normal")), message);
        }
    }
    if let Some((kind, to)) = message.reply_to.as_deref().and_then(ReplyKind::parse) {
        let _ = interpret(kind.route(), &reply, unix_now());
        let _ = reply_body(kind, to, level_for(message, Some("normal")), message);
    }
    let _ = describe(&parse_error(&reply), &reply);
    let _ = serde_json::from_slice::<TokenAnswer>(answer);
}

#[cfg(test)]
mod tests;
