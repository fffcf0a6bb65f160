//! Bitrix24: posts into chats and private dialogs with `im.message.add`.
//!
//! Two ways in. An incoming webhook, whose code in the URL path is the
//! secret: `POST {url}/rest/{user_id}/{code}/im.message.add.json`. Or an
//! OAuth application: `POST {url}/rest/im.message.add` with `auth` in the
//! body; the access token lives an hour, and when the portal says
//! `expired_token` (or `invalid_token`: another host refreshed) the host
//! refreshes it once (one refresh at a time across every host sharing the
//! storage backend, the other sends wait for it and read the new pair),
//! stores the new pair sealed (`token_store`) and retries.
//!
//! The body is JSON, which the REST API takes as well as a form; it lets
//! ATTACH, KEYBOARD and MENU travel as the JSON objects they are.

mod auth;
pub(crate) mod inbound;
mod token_store;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use self::auth::{Auth, OAuth, oauth, webhook, with_auth};
use super::common::{self, CopiedUrl, Options, Reply, write_url};
use super::target::{Form, Forms, Target};
use super::{ChannelRules, DeliveryOutcome, Part, Provider, ProviderContext};
use crate::config::{ChannelConfig, ConfigIssue, Secret};
use crate::providers::limits::{Limit, ThrottleSpec};
use crate::wit::types::{BroadcastError, Content, ContentKind, Message};

/// Bitrix24 documents no limit on `MESSAGE`; this is a conservative one,
/// several screens of chat.
pub const MAX_MESSAGE_CHARS: u32 = 10_000;
/// ATTACH, KEYBOARD and MENU are each at most "30 Kb" (`*_OVERSIZE`), read
/// the strict way: 30,000 bytes of the compact JSON that is sent.
pub const MAX_OPTION_BYTES: usize = 30_000;
/// The portal's leaky bucket drains about two requests a second.
const QUERY_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// How long to wait after `OVERLOAD_LIMIT`, which blocks a portal's REST
/// calls for a while the page does not give; a minute keeps retries from
/// prolonging the block.
const OVERLOAD_WAIT: Duration = Duration::from_secs(60);
/// How long to hold a method whose execution-time budget is spent, when
/// the portal does not say (`operating_reset_at`): a tenth of its
/// 10-minute window.
const OPERATING_WAIT: Duration = Duration::from_secs(60);

/// The errors `im.message.add` documents for a request it refuses.
const DOCUMENTED_ERRORS: [&str; 11] = [
    "USER_ID_EMPTY",
    "CHAT_ID_EMPTY",
    "ACCESS_ERROR",
    "MESSAGE_EMPTY",
    "ATTACH_ERROR",
    "ATTACH_OVERSIZE",
    "KEYBOARD_ERROR",
    "KEYBOARD_OVERSIZE",
    "MENU_ERROR",
    "MENU_OVERSIZE",
    "PARAMS_ERROR",
];

/// The `bitrix24` kind's registration: outbound and inbound.
pub const KIND: super::Kind = super::Kind {
    name: "bitrix24",
    build: |key, options, context| {
        Ok(std::sync::Arc::new(Bitrix24::from_options(
            key, options, context,
        )?))
    },
    inbound: Some(inbound::KIND),
};

/// A Bitrix24 portal account (an inbound webhook or an OAuth application).
pub struct Bitrix24 {
    /// The portal, without a trailing slash.
    base: String,
    auth: Auth,
    http: reqwest::Client,
    /// Execution time the portal reported (`time.operating`, in
    /// milliseconds) since the worker last asked; see
    /// [`Provider::take_reported_cost`].
    operating_ms: std::sync::atomic::AtomicU64,
}

/// The longest `time.operating` one answer may report: the whole
/// 10-minute window. More is a hostile or broken answer, capped.
const MAX_OPERATING_SECS: f64 = 600.0;

/// `time.operating` of an answer, in milliseconds, when it has a sane one.
fn reported_operating_ms(body: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let secs = v["time"]["operating"].as_f64()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| (secs.min(MAX_OPERATING_SECS) * 1000.0).round() as u64)
}

/// What one answer means, before the refresh-once rule.
#[derive(Debug, PartialEq)]
enum Answer {
    Done(DeliveryOutcome),
    TokenExpired(String),
    /// `invalid_token`: refused for a webhook; for OAuth, the pair may have
    /// been replaced by another host's refresh.
    TokenInvalid(String),
}

/// `chatN` (a chat) or `N` (a user's private dialog), N a positive
/// integer: the two forms the `im.message.add` page documents.
fn is_dialog_id(id: &str) -> bool {
    let digits = id.strip_prefix("chat").unwrap_or(id);
    !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The portal from what an operator copies: its address
/// (`https://portal.bitrix24.com`) or its REST address (`…/rest`), with or
/// without a trailing slash. An inbound webhook's URL
/// (`…/rest/{user_id}/{code}/`, as the portal shows it) is refused: its
/// path holds the webhook's secret code, which belongs in a secret
/// reference. (The URL forms: the seeds' README, Bitrix24 auth.)
pub(crate) fn portal(url: &CopiedUrl) -> Result<String, String> {
    match url.parts().as_slice() {
        [] | ["rest"] => Ok(url.origin.clone()),
        ["rest", user, ..]
            if !user.is_empty() && user.len() <= 18 && user.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Err(format!(
                "is an inbound webhook's URL, whose path holds the webhook's secret code: \
                 write url = \"{origin}\" and webhook = {{ user_id = {user}, code = {{ env = \
                 \"BITRIX24_WEBHOOK_CODE\" }} }}, with the code (what follows /rest/{user}/) \
                 in that variable or in a file (code = {{ file = \"…\" }})",
                origin = url.origin
            ))
        }
        ["rest", ..] => Err(format!(
            "names a REST method; botbox adds /rest/im.message.add itself: {}",
            write_url(&url.origin)
        )),
        _ => Err(format!(
            "is not a Bitrix24 portal address (the portal, optionally with /rest): {}",
            write_url(&url.origin)
        )),
    }
}

/// Why `id` is not a `DIALOG_ID`.
fn dialog_id_problem(id: &str) -> Option<String> {
    (!is_dialog_id(id)).then(|| "is neither chatN nor a positive user id".into())
}

/// What a Bitrix24 channel may target: `im.message.add` posts into one
/// dialog, and there is no broadcast, so dialogs are listed.
const TARGETS: Forms = Forms {
    provider: "a bitrix24 channel",
    forms: &[Form::Listed {
        kind: "dialogs",
        example: "\"chat13\", 256, …",
        ids: "dialog IDs (chatN for a chat, a user id for a private dialog)",
        integers: true,
        check: dialog_id_problem,
    }],
    default: None,
    legacy: &[],
};

fn parse_target(target: Option<&toml::Value>) -> Result<Vec<String>, String> {
    match TARGETS.parse(target)? {
        Target::Listed { ids, .. } => Ok(ids),
        Target::Every { kind, .. } => Err(format!("cannot reach every one of {kind}")),
    }
}

impl Bitrix24 {
    /// Builds the provider from its `[providers.NAME]` options (`key` is
    /// `providers.NAME`), reporting every problem with its key.
    pub fn from_options(
        key: &str,
        options: &toml::Table,
        context: &ProviderContext,
    ) -> Result<Bitrix24, Vec<ConfigIssue>> {
        let mut o = Options::account(
            options,
            key,
            &["url", "webhook", "oauth", common::ALLOW_PLAINTEXT],
        );
        let base = o.api_url("url", portal);
        let auth = match (o.has("webhook"), o.has("oauth")) {
            (true, true) => {
                o.issue("oauth", "give either webhook or oauth, not both");
                None
            }
            (false, false) => {
                o.issue(
                    "webhook",
                    "is missing: give webhook = { user_id = …, code = { env = \"…\" } } or an oauth table",
                );
                None
            }
            (true, false) => {
                let key = o.key("webhook");
                o.table("webhook")
                    .and_then(|t| webhook(&key, t, context, &mut o.issues))
            }
            (false, true) => {
                let oauth_key = o.key("oauth");
                let portal = base.clone().unwrap_or_default();
                o.table("oauth")
                    .and_then(|t| oauth(&oauth_key, t, context, key, &portal, &mut o.issues))
            }
        };
        if let Some(Auth::OAuth(oauth)) = &auth
            && let Some(message) =
                common::plaintext_refused(&oauth.token_url, o.allow_plaintext(), key)
        {
            o.issue("oauth.token_url", message);
        }
        match (base, auth) {
            (Some(base), Some(auth)) if o.issues.is_empty() => Ok(Bitrix24 {
                base,
                auth,
                http: context.http.clone(),
                operating_ms: std::sync::atomic::AtomicU64::new(0),
            }),
            _ => Err(o.issues),
        }
    }

    fn webhook_url(&self, user_id: u64, code: &Secret) -> String {
        format!(
            "{}/rest/{user_id}/{}/im.message.add.json",
            self.base,
            code.expose()
        )
    }

    /// Posts `body` and reads the answer with `secrets` (what the request
    /// carries) redacted from it.
    async fn post(
        &self,
        url: String,
        body: &Value,
        secrets: &[&str],
    ) -> Result<Reply, DeliveryOutcome> {
        let what = "bitrix24 im.message.add";
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| common::transport_failure(what, e))?;
        let reply = common::read_reply(what, response, secrets).await?;
        // Every answer says how long the method ran; the portal sums it per
        // method over 10 minutes against its budget.
        if let Some(ms) = reported_operating_ms(&reply.body) {
            self.operating_ms
                .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(reply)
    }

    /// One send with the refresh-once rule. `used` collects the access and
    /// refresh tokens involved, for scrubbing the outcome.
    async fn send_oauth(&self, o: &OAuth, body: &Value, used: &mut Vec<Secret>) -> DeliveryOutcome {
        let url = format!("{}/rest/im.message.add", self.base);
        let (access, refresh) = match o.current().await {
            Ok(pair) => pair,
            Err(outcome) => return outcome,
        };
        used.push(access.clone());
        used.push(refresh.clone());
        let sent = [o.client_secret.expose(), access.expose(), refresh.expose()];
        let reply = match self
            .post(url.clone(), &with_auth(body, &access), &sent)
            .await
        {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        match interpret(&reply) {
            Answer::Done(outcome) => outcome,
            Answer::TokenExpired(_) | Answer::TokenInvalid(_) => {
                // `invalid_token`: another host may have refreshed, which
                // kills this host's access token; the refresh reads the
                // stored pair before it asks the portal.
                tracing::info!(
                    "bitrix24: access token expired or replaced; refreshing once and retrying"
                );
                let fresh = match o.refresh(&access, &self.http).await {
                    Ok(t) => t,
                    Err(outcome) => return outcome,
                };
                let sent = [
                    o.client_secret.expose(),
                    access.expose(),
                    refresh.expose(),
                    fresh.expose(),
                ];
                let reply = match self.post(url, &with_auth(body, &fresh), &sent).await {
                    Ok(r) => r,
                    Err(outcome) => return outcome,
                };
                match interpret(&reply) {
                    Answer::Done(outcome) => outcome,
                    Answer::TokenExpired(reason) | Answer::TokenInvalid(reason) => {
                        DeliveryOutcome::CredentialsExpired {
                            reason: format!("{reason}; a freshly refreshed token was refused too"),
                        }
                    }
                }
            }
        }
    }
}

/// Reads an `im.message.add` answer.
fn interpret(reply: &Reply) -> Answer {
    let what = "bitrix24 im.message.add";
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    if let Some(code) = v["error"].as_str() {
        let description = common::provider_text(v["error_description"].as_str().unwrap_or(""));
        let safe_code = common::provider_code(code);
        let said = format!("{safe_code}: {description}");
        return Answer::Done(match code {
            "expired_token" => {
                return Answer::TokenExpired(format!("{what}: the access token expired ({said})"));
            }
            // The portal's leaky bucket, which every method shares.
            "QUERY_LIMIT_EXCEEDED" => DeliveryOutcome::Throttled {
                after: Some(reply.retry_after.unwrap_or(QUERY_LIMIT_WAIT)),
                limit: crate::providers::RateLimited::Account,
                reason: format!("{what}: the portal's request limit was exceeded ({said})"),
            },
            // The method's execution-time budget (480 s per 10 minutes)
            // is spent: it is blocked for every app of the portal until
            // part of the budget frees up.
            "OPERATION_TIME_LIMIT" => DeliveryOutcome::Throttled {
                after: Some(reply.retry_after.unwrap_or(OPERATING_WAIT)),
                limit: crate::providers::RateLimited::Endpoint,
                reason: format!("{what}: the method's execution-time budget is spent ({said})"),
            },
            "invalid_token" => {
                return Answer::TokenInvalid(format!(
                    "{what}: the webhook or token was refused ({said})"
                ));
            }
            "NO_AUTH_FOUND" | "INVALID_CREDENTIALS" => DeliveryOutcome::CredentialsExpired {
                reason: format!("{what}: the webhook or token was refused ({said})"),
            },
            "insufficient_scope" => DeliveryOutcome::CredentialsExpired {
                reason: format!("{what}: the webhook or application lacks the im scope ({said})"),
            },
            // The system errors any method may answer
            // (https://apidocs.bitrix24.com/error-codes.html).
            // The portal blocked REST calls for overload: the whole
            // account slows down, not only this message.
            "OVERLOAD_LIMIT" => DeliveryOutcome::Throttled {
                after: Some(reply.retry_after.unwrap_or(OVERLOAD_WAIT)),
                limit: crate::providers::RateLimited::Account,
                reason: format!("{what}: the portal blocked REST calls for overload ({said})"),
            },
            "INTERNAL_SERVER_ERROR" | "ERROR_UNEXPECTED_ANSWER" => DeliveryOutcome::RetryLater {
                after: reply.retry_after,
                reason: format!("{what}: the portal failed internally ({said})"),
            },
            "ACCESS_DENIED" => DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: the portal denies REST access (REST is on commercial plans only) ({said})"
                ),
            },
            "WRONG_AUTH_TYPE" => DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: this kind of authorization (webhook or OAuth) is not allowed for the method ({said})"
                ),
            },
            "user_access_error" | "ALLOWED_ONLY_INTRANET_USER" | "allowed_only_intranet_user" => {
                DeliveryOutcome::CredentialsExpired {
                    reason: format!(
                        "{what}: the webhook's or application's user may not use it ({said})"
                    ),
                }
            }
            "PORTAL_DELETED" => DeliveryOutcome::CredentialsExpired {
                reason: format!("{what}: the portal was deleted; check url ({said})"),
            },
            "INVALID_REQUEST" => DeliveryOutcome::Rejected {
                code: safe_code,
                reason: format!(
                    "{what}: the portal refused the request; it takes HTTPS only ({said})"
                ),
            },
            "ERROR_METHOD_NOT_FOUND" => DeliveryOutcome::Rejected {
                code: safe_code,
                reason: format!(
                    "{what}: the portal has no such method; check url and that the chat (im) module is installed ({said})"
                ),
            },
            c if DOCUMENTED_ERRORS.contains(&c) => DeliveryOutcome::Rejected {
                code: safe_code,
                reason: format!("{what} refused the message ({said})"),
            },
            _ if reply.status == 401 => DeliveryOutcome::CredentialsExpired {
                reason: format!("{what}: HTTP 401 ({said})"),
            },
            _ if reply.is_server_error() => DeliveryOutcome::RetryLater {
                after: reply.retry_after,
                reason: format!("{what}: HTTP {} ({said})", reply.status),
            },
            _ => DeliveryOutcome::Rejected {
                code: safe_code,
                reason: format!("{what} refused the message ({said})"),
            },
        });
    }
    if (200..300).contains(&reply.status) {
        return Answer::Done(match &v["result"] {
            Value::Number(n) => DeliveryOutcome::Delivered {
                provider_ids: vec![n.to_string()],
            },
            Value::String(s) => DeliveryOutcome::Delivered {
                provider_ids: vec![common::provider_code(s)],
            },
            Value::Null if v.is_object() => DeliveryOutcome::Rejected {
                code: "no_result".into(),
                reason: format!(
                    "{what}: the answer has neither result nor error: {}",
                    reply.snippet()
                ),
            },
            Value::Null => DeliveryOutcome::RetryLater {
                after: None,
                reason: format!(
                    "{what}: the answer is not Bitrix24's JSON: {}",
                    reply.snippet()
                ),
            },
            other => DeliveryOutcome::Rejected {
                code: "no_message_id".into(),
                reason: format!(
                    "{what}: result is {}, not a message id",
                    common::provider_text(&other.to_string())
                ),
            },
        });
    }
    Answer::Done(match reply.status {
        401 => DeliveryOutcome::CredentialsExpired {
            reason: format!("{what}: HTTP 401: {}", reply.snippet()),
        },
        // A 503 with no readable body is the portal's rate limit too, as
        // its documentation has it.
        503 => DeliveryOutcome::Throttled {
            after: Some(reply.retry_after.unwrap_or(QUERY_LIMIT_WAIT)),
            limit: crate::providers::RateLimited::Account,
            reason: format!("{what}: HTTP 503: {}", reply.snippet()),
        },
        _ if reply.is_transient() => reply.transient(format!(
            "{what}: HTTP {}: {}",
            reply.status,
            reply.snippet()
        )),
        s => DeliveryOutcome::Rejected {
            code: format!("http-{s}"),
            reason: format!(
                "{what}: HTTP {s}; check the portal url: {}",
                reply.snippet()
            ),
        },
    })
}

/// The `im.message.add` fields for one dialog, without `auth`.
fn request_body(dialog: &str, message: &Message) -> Result<Value, String> {
    let Content::Text(text) = &message.content else {
        return Err("Bitrix24 im.message.add carries text only".into());
    };
    let mut body = serde_json::Map::new();
    body.insert("DIALOG_ID".into(), json!(dialog));
    body.insert("MESSAGE".into(), json!(text));
    if let Some(o) = &message.options {
        body.insert("SYSTEM".into(), json!(if o.system { "Y" } else { "N" }));
        if let Some(preview) = o.url_preview {
            body.insert("URL_PREVIEW".into(), json!(if preview { "Y" } else { "N" }));
        }
        for (field, value) in [
            ("ATTACH", &o.attach),
            ("KEYBOARD", &o.keyboard),
            ("MENU", &o.menu),
        ] {
            if let Some(raw) = value {
                let parsed: Value = serde_json::from_str(raw)
                    .map_err(|e| format!("{field} is not valid JSON: {e}"))?;
                let bytes = parsed.to_string().len();
                if bytes > MAX_OPTION_BYTES {
                    return Err(format!(
                        "{field} is {bytes} bytes as compact JSON; Bitrix24 takes at most 30 KB, read as {MAX_OPTION_BYTES} bytes"
                    ));
                }
                body.insert(field.into(), parsed);
            }
        }
    }
    Ok(Value::Object(body))
}

#[async_trait]
impl Provider for Bitrix24 {
    fn kind(&self) -> &'static str {
        "bitrix24"
    }

    fn check_channel(&self, name: &str, channel: &ChannelConfig) -> Vec<ConfigIssue> {
        let prefix = format!("channels.{name}");
        let mut issues = Options::new(&channel.options, &prefix, &[]).issues;
        if let Err(message) = parse_target(channel.target.as_ref()) {
            issues.push(ConfigIssue {
                key: format!("{prefix}.target"),
                message,
            });
        }
        issues
    }

    fn rules(&self, _channel: &ChannelConfig) -> ChannelRules {
        ChannelRules {
            accepts: vec![ContentKind::Text],
            max_text_chars: MAX_MESSAGE_CHARS,
            splits_long_text: false,
            max_split_parts: 1,
            // im.message.add has no sender field: messages come from the
            // webhook's or application's user, and a sender is ignored.
            max_sender_chars: 255,
        }
    }

    fn validate(&self, _channel: &ChannelConfig, message: &Message) -> Result<(), BroadcastError> {
        if let Some(dialog) = &message.reply_to
            && !is_dialog_id(dialog)
        {
            return Err(BroadcastError::Invalid(
                "reply-to is not a Bitrix24 DIALOG_ID (chatN or a user id)".into(),
            ));
        }
        request_body("chat1", message)
            .map(|_| ())
            .map_err(BroadcastError::Invalid)
    }

    fn endpoint(&self, _channel: &ChannelConfig) -> &'static str {
        "rest"
    }

    fn default_throttle(&self, _endpoint: &str) -> ThrottleSpec {
        ThrottleSpec {
            limits: vec![
                // The portal's leaky bucket, shared by every method: drains
                // 2 requests a second, holds 50 (5/s and 250 on Enterprise,
                // set with `throttle`); over it, HTTP 503
                // QUERY_LIMIT_EXCEEDED (apidocs.bitrix24.com/settings/
                // performance/limits.html). `im.message.add` is the only
                // portal method botbox calls, so this endpoint's throttle
                // is the account's whole ceiling.
                Limit::LeakyBucket {
                    per_second: 2.0,
                    burst: 50,
                },
                // The method's execution time, summed over 10 minutes from
                // each answer's `time.operating`: past 480 s the method is
                // blocked (HTTP 429 OPERATION_TIME_LIMIT;
                // helpdesk.bitrix24.com/open/15961972,
                // training.bitrix24.com/rest_help/rest_sum/operating.php).
                Limit::Budget {
                    seconds: 480,
                    period_ms: 600_000,
                },
            ],
        }
    }

    fn take_reported_cost(&self, _endpoint: &str) -> Option<Duration> {
        let ms = self
            .operating_ms
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn requests(&self, channel: &ChannelConfig, message: &Message) -> usize {
        // One `im.message.add` per dialog.
        match &message.reply_to {
            Some(_) => 1,
            None => parse_target(channel.target.as_ref()).map_or(1, |d| d.len().max(1)),
        }
    }

    async fn plan(
        &self,
        channel_name: &str,
        channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome> {
        let dialogs = match &message.reply_to {
            Some(dialog) => vec![dialog.clone()],
            None => {
                parse_target(channel.target.as_ref()).map_err(|e| DeliveryOutcome::Rejected {
                    code: "config".into(),
                    reason: format!("channels.{channel_name}.target {e}"),
                })?
            }
        };
        Ok(dialogs
            .into_iter()
            .map(|dialog| Part {
                target: dialog,
                message: message.clone(),
                dedup_key: None,
                merged: Vec::new(),
            })
            .collect())
    }

    async fn send(&self, _channel: &ChannelConfig, part: &Part) -> DeliveryOutcome {
        let body = match request_body(&part.target, &part.message) {
            Ok(b) => b,
            Err(why) => {
                return DeliveryOutcome::Rejected {
                    code: "invalid".into(),
                    reason: why,
                };
            }
        };
        match &self.auth {
            Auth::Webhook { user_id, code } => {
                let url = self.webhook_url(*user_id, code);
                let outcome = match self.post(url, &body, &[code.expose()]).await {
                    Ok(reply) => match interpret(&reply) {
                        Answer::Done(outcome) => outcome,
                        // A webhook has nothing to refresh.
                        Answer::TokenExpired(reason) | Answer::TokenInvalid(reason) => {
                            DeliveryOutcome::CredentialsExpired { reason }
                        }
                    },
                    Err(outcome) => outcome,
                };
                common::scrub(outcome, &[code.expose()])
            }
            Auth::OAuth(o) => {
                let mut used = Vec::new();
                let outcome = self.send_oauth(o, &body, &mut used).await;
                let tokens = o.tokens.lock().await;
                let mut secrets = vec![
                    o.client_secret.expose(),
                    tokens.access.expose(),
                    tokens.refresh.expose(),
                ];
                secrets.extend(used.iter().map(Secret::expose));
                common::scrub(outcome, &secrets)
            }
        }
    }
}

/// For `fuzz/` only: the answer reader and the request builder on arbitrary input.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz(status: u16, answer: &[u8], message: &Message) {
    let _ = interpret(&Reply {
        status,
        body: answer.to_vec(),
        retry_after: None,
    });
    let _ = request_body("chat1", message);
}

#[cfg(test)]
mod tests;
