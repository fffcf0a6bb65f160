//! Tencent Cloud Chat: one message to every audio-video group (AVChatRoom)
//! with `v4/group_open_http_svc/send_broadcast_msg`, and replies into the
//! one group a chat message came from with `send_group_msg`.
//!
//! Requests are signed by a UserSig for the app admin `identifier`, carried
//! in the query. It is cached and renewed at 90% of its lifetime; when the
//! server still says it expired (70001, a skewed clock) the host makes a
//! fresh one and tries once more. The body's `Random` is Tencent's dedup
//! value for five minutes: it is drawn in `plan` and kept in
//! `Part::dedup_key`, so every retry of a part sends the same one.

mod body;
pub(crate) mod inbound;
mod usersig;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use self::body::{MAX_MSG_BODY_BYTES, merged_msg_body, msg_body, request_body};
use super::common::{self, Options, Reply, form_query, unix_now};
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

/// A reply goes into its group; everything else is a broadcast.
fn api_for(message: &Message) -> Api {
    if message.reply_to.is_some() {
        GROUP
    } else {
        BROADCAST
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
        let base = o.base_url("url");
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
        let ids = match r.msg_seq {
            Some(serde_json::Value::Number(n)) => vec![n.to_string()],
            Some(serde_json::Value::String(s)) => vec![common::provider_code(&s)],
            _ => vec![],
        };
        return Answer::Done(DeliveryOutcome::Delivered { provider_ids: ids });
    }
    let rejected = |why: &str| {
        Answer::Done(DeliveryOutcome::Rejected {
            code: code.to_string(),
            reason: format!("{what}: {why} ({code}: {info})"),
        })
    };
    let credentials = |why: &str| {
        Answer::Done(DeliveryOutcome::CredentialsExpired {
            reason: format!("{what}: {why} ({code}: {info})"),
        })
    };
    match code {
        0 => Answer::Done(DeliveryOutcome::Rejected {
            code: "FAIL".into(),
            reason: format!(
                "{what}: ActionStatus `{}` without an error code",
                common::provider_code(status)
            ),
        }),
        // "Message sending frequency exceeds the limit": on send_group_msg
        // the group's own 40 per second, on the broadcast the call limit.
        // The documented error lists give no separate code for the
        // REST API's own per-command QPS (the `Alert.RequestOverLimit`
        // callback reports it), so 10023 covers both here.
        10023 => Answer::Done(DeliveryOutcome::Throttled {
            after: Some(Duration::from_secs(1)),
            limit: if api == GROUP {
                crate::providers::RateLimited::Key
            } else {
                crate::providers::RateLimited::Endpoint
            },
            reason: format!("{what}: too frequent ({code}: {info})"),
        }),
        10002 => Answer::Done(DeliveryOutcome::RetryLater {
            after: None,
            reason: format!("{what}: internal server error ({code}: {info})"),
        }),
        10003 => rejected("invalid command word"),
        10004 => rejected("invalid parameter"),
        10007 if api == GROUP => rejected(
            "not permitted: the identifier is not the app admin, or the group does not let it post",
        ),
        10010 => rejected("the group was dismissed or does not exist"),
        10015 => rejected("the GroupId is invalid"),
        10016 => rejected("the app's before-send callback refused the message"),
        10017 => rejected("the sender is muted in this group"),
        80001 => rejected("the message was filtered as sensitive content"),
        80002 => rejected("the message is longer than 12 KB"),
        10007 => rejected(
            "not permitted: the console switch \"Broadcast messaging of audio-video group\" (Feature configuration > Group configuration) may be off, the plan may lack it (Pro, Pro Plus or Enterprise), or the identifier is not the app admin",
        ),
        70001 => Answer::UserSigExpired(format!(
            "{what}: the UserSig expired ({code}: {info}); check the host clock"
        )),
        70002 => credentials("the UserSig was empty"),
        70003 => credentials("the UserSig is malformed and could not be decoded"),
        70005 => credentials("the UserSig could not be verified"),
        70009 => credentials("bad UserSig signature: secret_key does not belong to this sdkappid"),
        70013 => credentials("the UserSig was made for another identifier than the request's"),
        70014 => credentials("the UserSig was made for another sdkappid than the request's"),
        70016 => {
            credentials("Tencent has no key for this sdkappid; check secret_key in the console")
        }
        70020 => credentials("sdkappid not found; check it and the region domain in url"),
        70050 => credentials("too many failed UserSig checks; the account is refused for a while"),
        60010 | 70403 => credentials("the identifier is not an app admin"),
        70000..=70099 => credentials("the UserSig was refused"),
        _ => rejected("refused"),
    }
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
        if channel.target.is_some() {
            issues.push(ConfigIssue {
                key: format!("{prefix}.target"),
                message: "a tencent channel has no target: send_broadcast_msg reaches every audio-video group; remove it".into(),
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
            if conversation.starts_with("c2c:") {
                return Err(BroadcastError::Unsupported(
                    "a Tencent channel answers into groups (send_group_msg); one-to-one replies are not supported".into(),
                ));
            }
            if !is_group_id(conversation) {
                return Err(BroadcastError::Invalid(format!(
                    "reply-to must be a Tencent GroupId: 1 to {MAX_GROUP_ID_BYTES} bytes of printable ASCII"
                )));
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
        &[GROUP.endpoint]
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

    fn merge(&self, channel: &ChannelConfig, part: &Part, next: &Message) -> Option<Part> {
        let enabled = channel
            .options
            .get("merge")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        // One request has one From_Account and one CloudCustomData, and
        // only broadcasts back up enough to be worth merging.
        if !enabled
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
        let body = match request_body(&part.message, &part.merged, random) {
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
    let _ = request_body(message, rest, 1);
}

#[cfg(test)]
mod tests;
