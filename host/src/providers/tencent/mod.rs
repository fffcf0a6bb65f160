//! Tencent Cloud Chat: one message to every audio-video group (AVChatRoom)
//! with `v4/group_open_http_svc/send_broadcast_msg`, replies into the one
//! group a chat message came from with `send_group_msg`, and replies to a
//! one-to-one (`c2c:{UserID}`) message with `v4/openim/sendmsg`.
//!
//! Requests are signed by a UserSig for the app admin `identifier`, carried
//! in the query. It is cached and renewed at 90% of its lifetime; when the
//! server still says it expired (70001, a skewed clock) the host makes a
//! fresh one and tries once more. The body's `Random` is Tencent's dedup
//! value for five minutes: it is drawn in `plan` and kept in
//! `Part::dedup_key`, so every retry of a part sends the same one.
//! A one-to-one reply carries the same drawn number as its `MsgRandom`;
//! `openim/sendmsg` documents no five-minute dedup like `Random`'s, so a
//! retry after a lost answer may show that reply twice (at least once).

mod body;
mod codes;
pub(crate) mod inbound;
mod usersig;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use self::body::{MAX_MSG_BODY_BYTES, merged_msg_body, msg_body, request_body};
use self::codes::Meaning;
use super::common::{self, CopiedUrl, Options, Reply, form_query, unix_now, write_url};
use super::target::{Form, Forms};
use super::{ChannelRules, DeliveryOutcome, Part, Provider, ProviderContext};
use crate::config::{ChannelConfig, ConfigIssue, Secret};
use crate::providers::limits::ThrottleSpec;
use crate::wit::types::{BroadcastError, ContentKind, Message};

/// The longest UserID (`From_Account`), in bytes of printable ASCII.
pub const MAX_ACCOUNT_BYTES: usize = 32;
const DEFAULT_USERSIG_TTL: i64 = 86_400;
/// The longest group ID: custom IDs are at most 48 bytes.
const MAX_GROUP_ID_BYTES: usize = 48;

/// One REST command: its throttle name and path.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Api {
    endpoint: &'static str,
    path: &'static str,
}

impl Api {
    fn what(self) -> String {
        format!("tencent {}", self.endpoint)
    }
}

const BROADCAST: Api = Api {
    endpoint: "send_broadcast_msg",
    path: "/v4/group_open_http_svc/send_broadcast_msg",
};
const GROUP: Api = Api {
    endpoint: "send_group_msg",
    path: "/v4/group_open_http_svc/send_group_msg",
};
/// "Sending One-to-One Messages to One User"
/// (<https://www.tencentcloud.com/document/product/1047/34919>).
const C2C: Api = Api {
    endpoint: "sendmsg",
    path: "/v4/openim/sendmsg",
};

/// How a one-to-one conversation is named (see `inbound.rs`): the prefix,
/// then the other user's UserID.
const C2C_PREFIX: &str = "c2c:";

/// The UserID a one-to-one reply goes to, when `conversation` names one.
fn c2c_peer(conversation: &str) -> Option<&str> {
    conversation.strip_prefix(C2C_PREFIX)
}

/// A reply to a one-to-one message goes back to that user, a reply to a
/// group message into that group; everything else is a broadcast.
fn api_for(message: &Message) -> Api {
    match message.reply_to.as_deref() {
        Some(conversation) if c2c_peer(conversation).is_some() => C2C,
        Some(_) => GROUP,
        None => BROADCAST,
    }
}

/// The `tencent` kind's registration: outbound and inbound.
pub const KIND: super::Kind = super::Kind {
    name: "tencent",
    build: |key, options, context| {
        Ok(std::sync::Arc::new(Tencent::from_options(
            key, options, context,
        )?))
    },
    inbound: Some(inbound::KIND),
};

/// A Tencent Cloud Chat (IM) app.
pub struct Tencent {
    /// The region domain with its scheme, without a trailing slash.
    base: String,
    sdkappid: u64,
    identifier: String,
    secret_key: Secret,
    usersig_ttl: u64,
    http: reqwest::Client,
    usersig: Mutex<Option<CachedSig>>,
}

struct CachedSig {
    value: Secret,
    /// Unix seconds after which a new one is made.
    renew_after: u64,
}

/// What one answer means, before the retry-once rule for 70001.
#[derive(Debug, PartialEq)]
enum Answer {
    Done(DeliveryOutcome),
    UserSigExpired(String),
}

#[derive(Deserialize)]
struct Response {
    #[serde(rename = "ActionStatus")]
    action_status: Option<String>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    #[serde(rename = "ErrorInfo")]
    error_info: Option<String>,
    #[serde(rename = "MsgSeq")]
    msg_seq: Option<serde_json::Value>,
    /// `openim/sendmsg`'s id of the message it stored.
    #[serde(rename = "MsgKey")]
    msg_key: Option<String>,
}

fn is_group_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_GROUP_ID_BYTES
        && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn is_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ACCOUNT_BYTES
        && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The REST API's domain from what an operator copies: the app's region
/// domain (`https://adminapisgp.im.qcloud.com`), with or without the `/v4`
/// every command's path starts with. The domains and the URL format:
/// <https://www.tencentcloud.com/document/product/1047/34620>.
pub(crate) fn api_base(url: &CopiedUrl) -> Result<String, String> {
    const DOMAINS: &str = "https://console.tim.qq.com (China), https://adminapisgp.im.qcloud.com \
         (Singapore), or the domain of the app's region in the REST API docs";
    if url.host == "tencentcloudapi.com" || url.host.ends_with(".tencentcloudapi.com") {
        return Err(format!(
            "is the Tencent Cloud API 3.0 (signed with a SecretId and SecretKey), not the Chat \
             REST API botbox calls with a UserSig: write url = {DOMAINS}"
        ));
    }
    match url.parts().as_slice() {
        [] | ["v4"] => Ok(url.origin.clone()),
        ["v4", ..] => Err(format!(
            "names a REST command; botbox adds each command's /v4/… path itself: {}",
            write_url(&url.origin)
        )),
        _ => Err(format!(
            "is not a Chat REST API address (the region domain, optionally with /v4): {}, \
             if that is the app's region domain ({DOMAINS})",
            write_url(&url.origin)
        )),
    }
}

/// What a Tencent channel may target: the broadcast reaches every
/// audio-video group, so a channel has one target, and it is the default.
const TARGETS: Forms = Forms {
    provider: "a tencent channel",
    forms: &[Form::Every {
        kind: "groups",
        scope: "all",
        aliases: &[],
        reaches: "every audio-video group, with send_broadcast_msg",
    }],
    default: Some(0),
    legacy: &[],
};

impl Tencent {
    /// Builds the provider from its `[providers.NAME]` options (`key` is
    /// `providers.NAME`), reporting every problem with its key.
    pub fn from_options(
        key: &str,
        options: &toml::Table,
        context: &ProviderContext,
    ) -> Result<Tencent, Vec<ConfigIssue>> {
        let mut o = Options::account(
            options,
            key,
            &[
                "url",
                "sdkappid",
                "identifier",
                "secret_key",
                "usersig_ttl_secs",
                common::ALLOW_PLAINTEXT,
            ],
        );
        let base = o.api_url("url", api_base);
        let sdkappid = o.integer("sdkappid", true, 1, u32::MAX as i64);
        let identifier = o.string("identifier", true);
        if let Some(id) = &identifier
            && !is_account_id(id)
        {
            o.issue(
                "identifier",
                "must be the app admin's UserID: 1 to 32 bytes of printable ASCII",
            );
        }
        let secret_key = o.secret("secret_key", true, &context.base_dir);
        // A UserSig shorter than five minutes would be renewed on nearly
        // every call; longer than 180 days is past what the SDKs issue.
        let ttl = o
            .integer("usersig_ttl_secs", false, 300, 180 * 86_400)
            .unwrap_or(DEFAULT_USERSIG_TTL);
        match (base, sdkappid, identifier, secret_key) {
            (Some(base), Some(sdkappid), Some(identifier), Some(secret_key))
                if o.issues.is_empty() =>
            {
                Ok(Tencent {
                    base,
                    sdkappid: sdkappid as u64,
                    identifier,
                    secret_key,
                    usersig_ttl: ttl as u64,
                    http: context.http.clone(),
                    usersig: Mutex::new(None),
                })
            }
            _ => Err(o.issues),
        }
    }

    /// The cached UserSig, or a new one when it is due or `fresh` is asked.
    fn usersig(&self, fresh: bool) -> Result<Secret, DeliveryOutcome> {
        let now = unix_now();
        let mut cached = self.usersig.lock().unwrap_or_else(PoisonError::into_inner);
        if !fresh
            && let Some(c) = cached.as_ref()
            && now < c.renew_after
        {
            return Ok(c.value.clone());
        }
        let sig = usersig::generate(
            self.secret_key.expose(),
            &self.identifier,
            self.sdkappid,
            now,
            self.usersig_ttl,
        )
        .map_err(|e| DeliveryOutcome::CredentialsExpired {
            reason: format!("tencent: cannot make a UserSig: {e}"),
        })?;
        let value = Secret::new(sig);
        *cached = Some(CachedSig {
            value: value.clone(),
            renew_after: now + self.usersig_ttl * 9 / 10,
        });
        Ok(value)
    }

    fn url(&self, api: Api, usersig: &Secret, random: u32) -> String {
        let sdkappid = self.sdkappid.to_string();
        let random = random.to_string();
        let query = form_query(&[
            ("sdkappid", &sdkappid),
            ("identifier", &self.identifier),
            ("usersig", usersig.expose()),
            ("random", &random),
            ("contenttype", "json"),
        ]);
        format!("{}{}?{query}", self.base, api.path)
    }

    async fn post(&self, api: Api, body: &serde_json::Value, random: u32, fresh: bool) -> Answer {
        let what = api.what();
        let sig = match self.usersig(fresh) {
            Ok(s) => s,
            Err(outcome) => return Answer::Done(outcome),
        };
        let response = match self
            .http
            .post(self.url(api, &sig, random))
            .json(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Answer::Done(common::transport_failure(&what, e)),
        };
        // The UserSig travels in the query: a hostile endpoint can echo it
        // (also in 70001's ErrorInfo), so the whole answer is redacted.
        let secrets = [self.secret_key.expose(), sig.expose()];
        match common::read_reply(&what, response, &secrets).await {
            Ok(reply) => match interpret(api, &reply) {
                Answer::Done(outcome) => Answer::Done(common::scrub(outcome, &secrets)),
                Answer::UserSigExpired(reason) => {
                    Answer::UserSigExpired(common::redact_text(&reason, &secrets))
                }
            },
            Err(outcome) => Answer::Done(common::scrub(outcome, &secrets)),
        }
    }
}

/// Reads an answer. The HTTP status is 200 even for errors; the body's
/// `ActionStatus`, `ErrorCode` and `ErrorInfo` say what happened.
fn interpret(api: Api, reply: &Reply) -> Answer {
    let what = api.what();
    if !(200..300).contains(&reply.status) {
        return Answer::Done(if reply.is_transient() {
            reply.transient(format!(
                "{what}: HTTP {}: {}",
                reply.status,
                reply.snippet()
            ))
        } else {
            DeliveryOutcome::Rejected {
                code: format!("http-{}", reply.status),
                reason: format!(
                    "{what}: HTTP {}; check the provider url (the region domain): {}",
                    reply.status,
                    reply.snippet()
                ),
            }
        });
    }
    let Ok(r) = serde_json::from_slice::<Response>(&reply.body) else {
        return Answer::Done(DeliveryOutcome::RetryLater {
            after: None,
            reason: format!(
                "{what}: the answer is not Tencent's JSON: {}",
                reply.snippet()
            ),
        });
    };
    let code = r.error_code.unwrap_or(0);
    let info = common::provider_text(r.error_info.as_deref().unwrap_or(""));
    let status = r.action_status.as_deref().unwrap_or("");
    if code == 0 && status == "OK" {
        let mut ids = match r.msg_seq {
            Some(serde_json::Value::Number(n)) => vec![n.to_string()],
            Some(serde_json::Value::String(s)) => vec![common::provider_code(&s)],
            _ => vec![],
        };
        ids.extend(r.msg_key.as_deref().map(common::provider_code));
        return Answer::Done(DeliveryOutcome::Delivered { provider_ids: ids });
    }
    if code == 0 {
        return Answer::Done(DeliveryOutcome::Rejected {
            code: "FAIL".into(),
            reason: format!(
                "{what}: ActionStatus `{}` without an error code",
                common::provider_code(status)
            ),
        });
    }
    let why = |words: &str| format!("{what}: {words} ({code}: {info})");
    Answer::Done(match codes::meaning(api, code) {
        Meaning::Rejected(words) => DeliveryOutcome::Rejected {
            code: code.to_string(),
            reason: why(words),
        },
        Meaning::Retry(words) => DeliveryOutcome::RetryLater {
            after: None,
            reason: why(words),
        },
        // Tencent's frequency codes say nothing of when; a second is the
        // window of every per-second limit they guard. 10023 on
        // send_group_msg is the group's own 40 per second; the others are
        // the command's or the app's call limit. The endpoint slows down
        // (`Throttled`), not only this message.
        Meaning::RateLimited(words) => DeliveryOutcome::Throttled {
            after: Some(Duration::from_secs(1)),
            limit: if api == GROUP && code == 10023 {
                crate::providers::RateLimited::Key
            } else {
                crate::providers::RateLimited::Endpoint
            },
            reason: why(words),
        },
        Meaning::Credentials(words) => DeliveryOutcome::CredentialsExpired { reason: why(words) },
        Meaning::UserSigExpired => {
            return Answer::UserSigExpired(why("the UserSig expired; check the host clock"));
        }
    })
}

#[async_trait]
impl Provider for Tencent {
    fn kind(&self) -> &'static str {
        "tencent"
    }

    fn check_channel(&self, name: &str, channel: &ChannelConfig) -> Vec<ConfigIssue> {
        let prefix = format!("channels.{name}");
        let options = Options::new(&channel.options, &prefix, &["merge"]);
        let mut issues = options.issues;
        if let Some(v) = channel.options.get("merge")
            && !v.is_bool()
        {
            issues.push(ConfigIssue {
                key: format!("{prefix}.merge"),
                message: "must be true or false".into(),
            });
        }
        if let Err(message) = TARGETS.parse(channel.target.as_ref()) {
            issues.push(ConfigIssue {
                key: format!("{prefix}.target"),
                message,
            });
        }
        if let Some(sender) = &channel.default_sender
            && !is_account_id(sender)
        {
            issues.push(ConfigIssue {
                key: format!("{prefix}.sender"),
                message:
                    "must be an existing UserID (From_Account): 1 to 32 bytes of printable ASCII"
                        .into(),
            });
        }
        issues
    }

    fn rules(&self, _channel: &ChannelConfig) -> ChannelRules {
        ChannelRules {
            accepts: vec![
                ContentKind::Text,
                ContentKind::Custom,
                ContentKind::Image,
                ContentKind::File,
                ContentKind::Audio,
                ContentKind::Video,
                ContentKind::Location,
            ],
            // The real bound is 12,000 bytes of MsgBody, checked in validate.
            max_text_chars: MAX_MSG_BODY_BYTES as u32,
            splits_long_text: false,
            max_split_parts: 1,
            max_sender_chars: MAX_ACCOUNT_BYTES as u32,
        }
    }

    fn validate(&self, _channel: &ChannelConfig, message: &Message) -> Result<(), BroadcastError> {
        if let Some(conversation) = &message.reply_to {
            match c2c_peer(conversation) {
                Some(peer) if !is_account_id(peer) => {
                    return Err(BroadcastError::Invalid(format!(
                        "reply-to `{C2C_PREFIX}…` must name a Tencent UserID (To_Account): 1 to {MAX_ACCOUNT_BYTES} bytes of printable ASCII"
                    )));
                }
                Some(_) => {}
                None if !is_group_id(conversation) => {
                    return Err(BroadcastError::Invalid(format!(
                        "reply-to must be a Tencent GroupId (1 to {MAX_GROUP_ID_BYTES} bytes of printable ASCII) or `{C2C_PREFIX}` and a UserID"
                    )));
                }
                None => {}
            }
        }
        let body = msg_body(message).map_err(BroadcastError::Invalid)?;
        let bytes = body.to_string().len();
        if bytes > MAX_MSG_BODY_BYTES {
            return Err(BroadcastError::Invalid(format!(
                "the Tencent MsgBody would be {bytes} bytes; the limit is {MAX_MSG_BODY_BYTES}"
            )));
        }
        if let Some(sender) = &message.sender
            && !is_account_id(sender)
        {
            return Err(BroadcastError::Invalid(
                "sender must be a Tencent UserID (From_Account): 1 to 32 bytes of printable ASCII"
                    .into(),
            ));
        }
        Ok(())
    }

    fn endpoint(&self, _channel: &ChannelConfig) -> &'static str {
        BROADCAST.endpoint
    }

    fn reply_endpoints(&self, _channel: &ChannelConfig) -> &'static [&'static str] {
        &[GROUP.endpoint, C2C.endpoint]
    }

    fn route(&self, _channel: &ChannelConfig, message: &Message) -> &'static str {
        api_for(message).endpoint
    }

    fn default_throttle(&self, endpoint: &str) -> ThrottleSpec {
        if endpoint == GROUP.endpoint {
            // The command's own ceiling for the whole app: 200 calls a
            // second. Tencent limits REST calls per app and command; its
            // `Alert.RequestOverLimit` callback reports a command's QPS
            // `Limit` (200 in its example,
            // https://tencentcloud.com/zh/document/product/1047/60256), and
            // the simulator models send_group_msg at 200. The API page
            // (https://tencentcloud.com/document/product/1047/34959) was
            // not readable here to confirm the figure; an operator changes
            // it with `throttle = { send_group_msg = [...] }`.
            // Each group's own 40 per second is `key_throttle`.
            return ThrottleSpec::windows(&[(200, 1000)]);
        }
        if endpoint == C2C.endpoint {
            // "Maximum call frequency: 200 queries/sec" for the app
            // (1047/34919); no per-recipient limit is documented.
            return ThrottleSpec::windows(&[(200, 1000)]);
        }
        // "Maximum call frequency: 1 times/second" (5/s on higher plans,
        // which an operator sets with `throttle`).
        ThrottleSpec::windows(&[(1, 1000)])
    }

    fn key_throttle(&self, endpoint: &str) -> Option<ThrottleSpec> {
        // "Up to 40 messages can be sent per second per group (regardless
        // of the group type, and this limit applies to each group
        // separately)": Use Limits,
        // https://www.tencentcloud.com/document/product/1047/34381.
        (endpoint == GROUP.endpoint).then(|| ThrottleSpec::windows(&[(40, 1000)]))
    }

    fn throttle_key(&self, endpoint: &str, part: &Part) -> Option<String> {
        // A reply's group is its `reply-to`.
        if endpoint == GROUP.endpoint {
            part.message.reply_to.clone()
        } else {
            None
        }
    }

    async fn plan(
        &self,
        _channel_name: &str,
        _channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome> {
        Ok(vec![Part {
            target: String::new(),
            message: message.clone(),
            dedup_key: Some(rand::random::<u32>().to_string()),
            merged: Vec::new(),
        }])
    }

    /// Only a channel with `merge = true` merges.
    fn merges(&self, channel: &ChannelConfig) -> bool {
        channel
            .options
            .get("merge")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }

    fn merge(&self, channel: &ChannelConfig, part: &Part, next: &Message) -> Option<Part> {
        // One request has one From_Account and one CloudCustomData, and
        // only broadcasts back up enough to be worth merging.
        if !self.merges(channel)
            || part.message.reply_to.is_some()
            || next.reply_to.is_some()
            || next.sender != part.message.sender
            || next.extra != part.message.extra
        {
            return None;
        }
        let mut merged = part.merged.clone();
        merged.push(next.clone());
        let bytes = merged_msg_body(&part.message, &merged)
            .ok()?
            .to_string()
            .len();
        (bytes <= MAX_MSG_BODY_BYTES).then(|| Part {
            merged,
            ..part.clone()
        })
    }

    async fn send(&self, _channel: &ChannelConfig, part: &Part) -> DeliveryOutcome {
        let random = match part.dedup_key.as_deref().map(str::parse::<u32>) {
            Some(Ok(r)) => r,
            // A part planned elsewhere without a Random: draw one now. Its
            // retries are then not deduplicated, so say so.
            _ => {
                tracing::warn!("tencent: part without a usable Random; drawing a new one");
                rand::random::<u32>()
            }
        };
        let to_account = part.message.reply_to.as_deref().and_then(c2c_peer);
        let body = match request_body(&part.message, &part.merged, random, to_account) {
            Ok(b) => b,
            Err(why) => {
                return DeliveryOutcome::Rejected {
                    code: "invalid".into(),
                    reason: why,
                };
            }
        };
        let api = api_for(&part.message);
        match self.post(api, &body, random, false).await {
            Answer::Done(outcome) => outcome,
            Answer::UserSigExpired(_) => {
                tracing::info!("tencent: UserSig expired; retrying once with a fresh one");
                match self.post(api, &body, random, true).await {
                    Answer::Done(outcome) => outcome,
                    Answer::UserSigExpired(reason) => DeliveryOutcome::CredentialsExpired {
                        reason: format!("{reason}; a freshly made UserSig was refused too"),
                    },
                }
            }
        }
    }
}

/// For `fuzz/` only: the answer reader and the request builder on arbitrary input.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz(status: u16, answer: &[u8], message: &Message, rest: &[Message]) {
    let reply = Reply {
        status,
        body: answer.to_vec(),
        retry_after: None,
    };
    let _ = interpret(BROADCAST, &reply);
    let _ = interpret(GROUP, &reply);
    let _ = interpret(C2C, &reply);
    let _ = request_body(message, rest, 1, None);
    let _ = request_body(message, rest, 1, Some("peer"));
}

#[cfg(test)]
mod tests;
