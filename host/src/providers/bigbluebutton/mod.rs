//! BigBlueButton: posts into the public chat of running meetings with the
//! signed `sendChatMessage` call (BigBlueButton 3.0 and later).
//!
//! Every call is a GET whose query ends in `checksum`, computed over the
//! call name, exactly the encoded query before it, and the shared secret.
//! Text is the only content; over 500 characters it is split at word
//! boundaries into ordered parts. A channel targets a fixed list of
//! meetings or every running meeting, which `plan` expands with a signed
//! `getMeetings`.

pub(crate) mod api;
pub(crate) mod inbound;
pub mod register;
mod split;

use async_trait::async_trait;

use self::api::{Checksum, Envelope, parse_envelope, signed_url};
use self::split::{normalize_newlines, split_text, utf16_len};
use super::common::{self, CopiedUrl, Options, Reply, write_url};
use super::target::{Form, Forms, Target};
use super::{ChannelRules, DeliveryOutcome, Part, Provider, ProviderContext};
use crate::config::{ChannelConfig, ConfigIssue, Secret};
use crate::providers::limits::ThrottleSpec;
use crate::wit::types::{BroadcastError, Content, ContentKind, Message};

/// Longest `message`, in UTF-16 units as the server counts.
pub const MAX_MESSAGE_CHARS: u32 = 500;
/// Longest `userName`.
pub const MAX_USER_NAME_CHARS: u32 = 255;
/// How many chat messages one long text may become. Twenty parts is 10,000
/// characters: more than that is a document, not a chat line.
pub const MAX_SPLIT_PARTS: u32 = 20;

/// The `bigbluebutton` kind's registration: outbound and inbound.
pub const KIND: super::Kind = super::Kind {
    name: "bigbluebutton",
    build: |key, options, context| {
        Ok(std::sync::Arc::new(BigBlueButton::from_options(
            key, options, context,
        )?))
    },
    inbound: Some(inbound::KIND),
};

/// A BigBlueButton server account.
pub struct BigBlueButton {
    /// `…/bigbluebutton/api`, without a trailing slash.
    base: String,
    secret: Secret,
    algorithm: Checksum,
    http: reqwest::Client,
    /// How many meetings were running at the last `getMeetings`: what a
    /// message to all running meetings is expected to cost.
    last_running: std::sync::atomic::AtomicUsize,
}

/// Which meetings a channel posts to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Meetings {
    AllRunning,
    List(Vec<String>),
}

/// An account's API settings as this provider parses them from
/// `[providers.NAME]`: what every signed call (and `hooks/create`) needs.
pub struct ApiSettings {
    /// `…/bigbluebutton/api`, without a trailing slash.
    pub(crate) base: String,
    pub(crate) secret: Secret,
    pub(crate) algorithm: Checksum,
}

impl ApiSettings {
    /// Reads and checks the provider's options (`key` is `providers.NAME`),
    /// reporting every problem with its key.
    pub fn from_options(
        key: &str,
        options: &toml::Table,
        base_dir: &std::path::Path,
    ) -> Result<ApiSettings, Vec<ConfigIssue>> {
        let mut o = Options::account(
            options,
            key,
            &["url", "secret", "checksum", common::ALLOW_PLAINTEXT],
        );
        let base = o.api_url("url", api_base);
        let secret = o.secret("secret", true, base_dir);
        let algorithm = match o.string("checksum", false) {
            None => Some(Checksum::Sha256),
            Some(name) => {
                let parsed = Checksum::parse(&name);
                if parsed.is_none() {
                    o.issue(
                        "checksum",
                        "must be one of sha1, sha256, sha384, sha512 (the server's supportedChecksumAlgorithms)",
                    );
                }
                parsed
            }
        };
        match (base, secret, algorithm) {
            (Some(base), Some(secret), Some(algorithm)) if o.issues.is_empty() => Ok(ApiSettings {
                base,
                secret,
                algorithm,
            }),
            _ => Err(o.issues),
        }
    }
}

impl BigBlueButton {
    /// Builds the provider from its options.
    pub fn from_options(
        key: &str,
        options: &toml::Table,
        context: &ProviderContext,
    ) -> Result<BigBlueButton, Vec<ConfigIssue>> {
        let ApiSettings {
            base,
            secret,
            algorithm,
        } = ApiSettings::from_options(key, options, &context.base_dir)?;
        Ok(BigBlueButton {
            base,
            secret,
            algorithm,
            http: context.http.clone(),
            last_running: Default::default(),
        })
    }

    fn url(&self, call: &str, params: &[(&str, &str)]) -> String {
        signed_url(
            &self.base,
            call,
            params,
            self.algorithm,
            self.secret.expose(),
        )
    }

    /// Lists running meetings with a signed `getMeetings`.
    async fn running_meetings(&self) -> Result<Vec<String>, DeliveryOutcome> {
        let what = "bigbluebutton getMeetings";
        let response = self
            .http
            .get(self.url("getMeetings", &[]))
            .send()
            .await
            .map_err(|e| common::transport_failure(what, e))?;
        let reply = common::read_reply(what, response, &[self.secret.expose()]).await?;
        let meetings = self.meetings_from(what, &reply)?;
        self.last_running
            .store(meetings.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(meetings)
    }

    /// The running meetings a `getMeetings` answer lists. Breakout rooms
    /// are left out: `sendChatMessage` cannot post into them.
    fn meetings_from(&self, what: &str, reply: &Reply) -> Result<Vec<String>, DeliveryOutcome> {
        match parse_envelope(&reply.body) {
            Ok(envelope) if envelope.returncode.as_deref() == Some("SUCCESS") => Ok(envelope
                .meetings
                .into_iter()
                .filter(|m| m.running && !m.breakout && is_meeting_id(&m.id))
                .map(|m| m.id)
                .collect()),
            // Older servers answer an empty list with FAILED/noMeetings.
            Ok(envelope) if envelope.message_key.as_deref() == Some("noMeetings") => Ok(vec![]),
            Ok(envelope) => Err(self.failure(what, envelope)),
            Err(e) => Err(unreadable(what, reply, &e.to_string())),
        }
    }

    /// What a FAILED envelope means.
    fn failure(&self, what: &str, envelope: Envelope) -> DeliveryOutcome {
        let key = envelope.message_key.unwrap_or_default();
        let text = common::provider_text(envelope.message.as_deref().unwrap_or(""));
        let said = if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        };
        if envelope.returncode.as_deref() != Some("FAILED") {
            return DeliveryOutcome::RetryLater {
                after: None,
                reason: format!(
                    "{what}: unexpected returncode `{}`",
                    common::provider_code(envelope.returncode.as_deref().unwrap_or(""))
                ),
            };
        }
        match key.as_str() {
            "checksumError" => DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: the server refused the checksum (checksumError); the shared secret is wrong or the server does not accept {}{said}",
                    self.algorithm.name()
                ),
            },
            "" => DeliveryOutcome::Rejected {
                code: "FAILED".into(),
                reason: format!("{what}: the server said FAILED without a messageKey{said}"),
            },
            other => DeliveryOutcome::Rejected {
                code: common::provider_code(other),
                reason: format!("{what}: {}{said}", refusal_of(other)),
            },
        }
    }
}

/// What a FAILED `messageKey` says was wrong with the request.
///
/// BigBlueButton 2.4+ validates each API request with constraint
/// annotations whose `key` becomes the `messageKey`
/// (bigbluebutton/bigbluebutton, `bbb-common-web/src/main/java/org/
/// bigbluebutton/api/model/request/SendChatMessage.java` and
/// `…/model/constraint/`: `Size` → `sizeError`, `NotNull` → `nullError`,
/// `NotEmpty` → `emptyError` (`missingParamMeetingID` on the meeting id),
/// `Pattern` → `validationError`, `MeetingExistsConstraint` → `notFound`);
/// the older controller's keys are in `…/api/ApiErrors.java` and the API
/// reference (seeds `000_…`, `003_…`).
fn refusal_of(key: &str) -> &'static str {
    match key {
        "meetingNotFound" | "notFound" | "invalidMeetingId" | "invalidMeetingIdentifier" => {
            "the meeting has ended or does not exist"
        }
        "meetingForciblyEnded" => "the meeting was ended",
        "missingParamMeetingID" => "the request named no meeting (meetingID)",
        "missingParamMessage" | "nullError" | "emptyError" | "MissingParam" => {
            "a required parameter (the message text) was missing or empty"
        }
        "sizeError" => {
            "a parameter is outside BigBlueButton's size limits: meetingID 2 to 256, message 1 to 500, userName at most 255 characters"
        }
        "validationError" | "invalidMessage" => {
            "the server's validation refused a parameter (the message, the userName, or a meetingID with a comma)"
        }
        // A key this host does not know: the server's own words follow.
        _ => "the server refused the message",
    }
}

/// An answer that is not a BigBlueButton envelope.
fn unreadable(what: &str, reply: &Reply, why: &str) -> DeliveryOutcome {
    if reply.is_transient() || (200..300).contains(&reply.status) {
        reply.transient(format!(
            "{what}: HTTP {} with an answer that is not a BigBlueButton response ({why}): {}",
            reply.status,
            reply.snippet()
        ))
    } else {
        DeliveryOutcome::Rejected {
            code: format!("http-{}", reply.status),
            reason: format!(
                "{what}: HTTP {} ({why}); check the provider url: {}",
                reply.status,
                reply.snippet()
            ),
        }
    }
}

/// A meeting ID as the API takes it: 2 to 256 characters, no commas.
fn is_meeting_id(id: &str) -> bool {
    let n = id.chars().count();
    (2..=256).contains(&n) && !id.contains(',') && !id.chars().any(char::is_control)
}

/// The API base, `…/bigbluebutton/api`, from what an operator copies: the
/// server (`https://bbb.example.com`), the URL `bbb-conf --secret` prints
/// (`https://bbb.example.com/bigbluebutton/`), or the API's own
/// (`…/bigbluebutton/api`), with or without a trailing slash, also behind
/// a proxy's path prefix. Every call is `{base}/{call}` (the API reference,
/// seed 003; `bbb-conf --secret`'s output:
/// <https://bbbserver.com/bigbluebutton-api-guide/security/checksum-authentication>).
pub(crate) fn api_base(url: &CopiedUrl) -> Result<String, String> {
    let parts = url.parts();
    let Some(at) = parts.iter().rposition(|p| *p == "bigbluebutton") else {
        if parts.is_empty() {
            return Ok(url.join(&["bigbluebutton", "api"]));
        }
        return Err(format!(
            "is not a BigBlueButton API address (the API is at /bigbluebutton/api on the server): {}, \
             the URL `bbb-conf --secret` prints",
            write_url(&url.join(&["bigbluebutton", "api"]))
        ));
    };
    // A proxy's prefix is the operator's own path: kept, never repeated.
    let fix = || {
        let prefix = if at > 0 { "/…" } else { "" };
        write_url(&format!("{}{prefix}/bigbluebutton/api", url.origin))
    };
    match &parts[at + 1..] {
        [] => {
            let mut base = parts[..=at].to_vec();
            base.push("api");
            Ok(url.join(&base))
        }
        ["api"] => Ok(url.join(&parts)),
        ["api", call, ..] => {
            let call = if call.len() <= 40 && call.bytes().all(|b| b.is_ascii_alphanumeric()) {
                format!("the API call `{call}`")
            } else {
                "an API call".to_string()
            };
            Err(format!(
                "names {call}; botbox adds each call itself: {}",
                fix()
            ))
        }
        _ => Err(format!(
            "is not a BigBlueButton API address (its path goes past /bigbluebutton): {}",
            fix()
        )),
    }
}

/// Why `id` is not a meeting ID as the API takes it.
fn meeting_id_problem(id: &str) -> Option<String> {
    (!is_meeting_id(id)).then(|| "is not a meeting ID: 2 to 256 characters, no commas".into())
}

/// What a BigBlueButton channel may target.
const TARGETS: Forms = Forms {
    provider: "a bigbluebutton channel",
    forms: &[
        Form::Every {
            kind: "meetings",
            scope: "all",
            aliases: &["all-running"],
            reaches: "every running meeting, listed with getMeetings",
        },
        Form::Listed {
            kind: "meetings",
            example: "\"meetingID\", …",
            ids: "meeting IDs",
            integers: false,
            check: meeting_id_problem,
        },
    ],
    default: None,
    legacy: &[],
};

fn parse_target(target: Option<&toml::Value>) -> Result<Meetings, String> {
    match TARGETS.parse(target)? {
        Target::Every { .. } => Ok(Meetings::AllRunning),
        Target::Listed { ids, .. } => Ok(Meetings::List(ids)),
    }
}

/// Characters BigBlueButton does not take in a parameter. Line breaks and
/// tabs are kept: the HTML5 client shows multi-line chat.
fn check_controls(field: &str, text: &str) -> Result<(), BroadcastError> {
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(BroadcastError::Invalid(format!(
            "{field} contains control character U+{:04X}, which BigBlueButton does not accept",
            c as u32
        )));
    }
    Ok(())
}

#[async_trait]
impl Provider for BigBlueButton {
    fn kind(&self) -> &'static str {
        "bigbluebutton"
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
        if let Some(sender) = &channel.default_sender
            && (sender.is_empty() || utf16_len(sender) > MAX_USER_NAME_CHARS as usize)
        {
            issues.push(ConfigIssue {
                key: format!("{prefix}.sender"),
                message: format!("must be 1 to {MAX_USER_NAME_CHARS} characters (userName)"),
            });
        }
        issues
    }

    fn rules(&self, _channel: &ChannelConfig) -> ChannelRules {
        ChannelRules {
            accepts: vec![ContentKind::Text],
            max_text_chars: MAX_MESSAGE_CHARS,
            splits_long_text: true,
            max_split_parts: MAX_SPLIT_PARTS,
            max_sender_chars: MAX_USER_NAME_CHARS,
        }
    }

    fn validate(&self, _channel: &ChannelConfig, message: &Message) -> Result<(), BroadcastError> {
        let Content::Text(text) = &message.content else {
            return Err(BroadcastError::Unsupported(
                "BigBlueButton chat carries text only".into(),
            ));
        };
        check_controls("text", text)?;
        let parts = split_text(&normalize_newlines(text), MAX_MESSAGE_CHARS as usize).len();
        if parts > MAX_SPLIT_PARTS as usize {
            return Err(BroadcastError::Invalid(format!(
                "text would be {parts} chat messages of at most {MAX_MESSAGE_CHARS} characters; the limit is {MAX_SPLIT_PARTS}"
            )));
        }
        if let Some(sender) = &message.sender {
            check_controls("sender", sender)?;
            // The generic check counts characters; the server counts UTF-16.
            if utf16_len(sender) > MAX_USER_NAME_CHARS as usize {
                return Err(BroadcastError::Invalid(format!(
                    "sender is longer than the {MAX_USER_NAME_CHARS} UTF-16 units BigBlueButton takes as userName"
                )));
            }
        }
        if let Some(meeting) = &message.reply_to
            && !is_meeting_id(meeting)
        {
            return Err(BroadcastError::Invalid(
                "reply-to is not a BigBlueButton meeting ID (2 to 256 characters, no commas)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn endpoint(&self, _channel: &ChannelConfig) -> &'static str {
        "sendChatMessage"
    }

    fn default_throttle(&self, _endpoint: &str) -> ThrottleSpec {
        // No documented limit ("rapid successive calls may be limited"): a
        // conservative five a second, which an operator can override.
        ThrottleSpec::windows(&[(5, 1000)])
    }

    fn requests(&self, channel: &ChannelConfig, message: &Message) -> usize {
        let Content::Text(text) = &message.content else {
            return 1;
        };
        let meetings = match &message.reply_to {
            Some(_) => 1,
            None => match parse_target(channel.target.as_ref()) {
                Ok(Meetings::List(ids)) => ids.len(),
                Ok(Meetings::AllRunning) => {
                    self.last_running.load(std::sync::atomic::Ordering::Relaxed)
                }
                Err(_) => 1,
            },
        };
        let parts = split_text(&normalize_newlines(text), MAX_MESSAGE_CHARS as usize).len();
        meetings.max(1) * parts.max(1)
    }

    async fn plan(
        &self,
        channel_name: &str,
        channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome> {
        let Content::Text(text) = &message.content else {
            return Err(DeliveryOutcome::Rejected {
                code: "unsupported".into(),
                reason: "BigBlueButton chat carries text only".into(),
            });
        };
        let meetings = match &message.reply_to {
            Some(meeting) => vec![meeting.clone()],
            None => match parse_target(channel.target.as_ref()) {
                Ok(Meetings::List(ids)) => ids,
                Ok(Meetings::AllRunning) => self
                    .running_meetings()
                    .await
                    .map_err(|o| common::scrub(o, &[self.secret.expose()]))?,
                Err(e) => {
                    return Err(DeliveryOutcome::Rejected {
                        code: "config".into(),
                        reason: format!("channels.{channel_name}.target {e}"),
                    });
                }
            },
        };
        let texts = split_text(&normalize_newlines(text), MAX_MESSAGE_CHARS as usize);
        // Meeting by meeting, each meeting's parts in order, so a reader
        // never sees part 2 before part 1.
        let mut parts = Vec::with_capacity(meetings.len() * texts.len());
        for meeting in &meetings {
            for piece in &texts {
                let mut m = message.clone();
                m.content = Content::Text(piece.clone());
                parts.push(Part {
                    target: meeting.clone(),
                    message: m,
                    dedup_key: None,
                    merged: Vec::new(),
                });
            }
        }
        Ok(parts)
    }

    async fn send(&self, _channel: &ChannelConfig, part: &Part) -> DeliveryOutcome {
        let what = "bigbluebutton sendChatMessage";
        let Content::Text(text) = &part.message.content else {
            return DeliveryOutcome::Rejected {
                code: "unsupported".into(),
                reason: "BigBlueButton chat carries text only".into(),
            };
        };
        let mut params = vec![
            ("meetingID", part.target.as_str()),
            ("message", text.as_str()),
        ];
        if let Some(sender) = &part.message.sender {
            params.push(("userName", sender.as_str()));
        }
        let response = match self
            .http
            .get(self.url("sendChatMessage", &params))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return common::transport_failure(what, e),
        };
        let outcome = match common::read_reply(what, response, &[self.secret.expose()]).await {
            Ok(reply) => self.interpret_send(what, &reply),
            Err(outcome) => outcome,
        };
        common::scrub(outcome, &[self.secret.expose()])
    }
}

impl BigBlueButton {
    fn interpret_send(&self, what: &str, reply: &Reply) -> DeliveryOutcome {
        match parse_envelope(&reply.body) {
            Ok(envelope) if envelope.returncode.as_deref() == Some("SUCCESS") => {
                DeliveryOutcome::Delivered {
                    provider_ids: vec![],
                }
            }
            Ok(envelope) => self.failure(what, envelope),
            Err(e) => unreadable(what, reply, &e.to_string()),
        }
    }
}

/// For `fuzz/` only: the XML answer reader and the text splitter on arbitrary input.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz(answer: &[u8], message: &Message) {
    let _ = parse_envelope(answer);
    if let Content::Text(text) = &message.content {
        let text = normalize_newlines(text);
        let max = MAX_MESSAGE_CHARS as usize;
        let parts = split_text(&text, max);
        assert!(
            parts.iter().all(|p| utf16_len(p) <= max),
            "a part over the limit"
        );
        // Only whitespace at a cut may be dropped.
        let kept = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(
            kept(&parts.concat()),
            kept(&text),
            "split lost or added text"
        );
    }
}

#[cfg(test)]
mod tests;
