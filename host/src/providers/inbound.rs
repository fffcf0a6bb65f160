//! The inbound half of a provider: how its callbacks (webhooks to botbox)
//! are authenticated, read and answered.
//!
//! Each provider that sends callbacks implements [`Inbound`] in its own
//! `providers/<p>/inbound.rs` and names its [`InboundKind`] in its registry
//! entry ([`super::Kind`]). The webhook server (`triggers::webhooks`) is
//! provider-neutral: it serves every inbound at `POST /webhooks/{provider
//! name}`, bounds the body and the time, hands the call to the provider's
//! [`Inbound::verify`] and [`Inbound::parse`], refuses replays by
//! [`Parsed::dedup_key`], counts and logs, routes the events and answers
//! with [`Inbound::ack`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::config::{ConfigIssue, Secret};
use crate::sanitize;
use crate::wit::types::{ChatMessage, Event, MeetingEvent, MeetingEventKind};

/// The longest a call stays acceptable when it carries no time of its own,
/// and BigBlueButton's freshness window: events older (or newer) than this
/// are refused as stale. `webhooks.max_skew_s` is at most this.
pub const REPLAY_TTL: Duration = Duration::from_secs(3600);
/// Longest text taken from a callback (characters).
const MAX_TEXT_CHARS: usize = 16_000;
/// Longest id and name taken from a callback (characters).
const MAX_ID_CHARS: usize = 256;

/// One provider account's callback verifier, built from its
/// `[providers.NAME.inbound]` section and the provider's own options.
pub trait Inbound: Send + Sync + std::fmt::Debug {
    /// Authenticates one call: its signature, token or checksum, the
    /// account it names, and its time (through [`Call::check_fresh`]).
    fn verify(&self, call: &Call) -> Result<(), Refusal>;

    /// Reads what an authenticated call says: the events, and the key that
    /// tells a replay of it apart.
    fn parse(&self, call: &Call) -> Result<Parsed, Refusal>;

    /// The body of the 200 answer to an accepted call. It may depend on
    /// the call (an endpoint check that must echo a challenge).
    fn ack(&self, _call: &Call, _parsed: &Parsed) -> String {
        "ok".into()
    }

    /// The callback URL the provider was told (BigBlueButton's
    /// `inbound.url`, which its checksum covers), when it is not the
    /// listener's own `http://{listen}/webhooks/{name}`.
    fn callback_url(&self) -> Option<&str> {
        None
    }
}

/// Builds one account's [`Inbound`] from its section.
pub type SetupInbound = fn(&InboundSetup) -> Result<Box<dyn Inbound>, Vec<ConfigIssue>>;

/// How a provider kind receives callbacks: the inbound half of its
/// registry entry.
#[derive(Clone, Copy)]
pub struct InboundKind {
    /// The keys its `[providers.NAME.inbound]` table may hold; `secret` is
    /// always among them and read by the webhook settings.
    pub keys: &'static [&'static str],
    /// Builds one account's verifier, reporting every problem with its key.
    pub setup: SetupInbound,
}

/// What a provider's inbound is built from.
pub struct InboundSetup<'a> {
    /// The provider account's name: the `{provider}` of the callback path.
    pub name: &'a str,
    /// `providers.NAME.inbound`, for the keys of issues.
    pub key: &'a str,
    /// The `[providers.NAME.inbound]` table.
    pub table: &'a toml::Table,
    /// The provider's own options (`[providers.NAME]` but `kind`, `inbound`).
    pub options: &'a toml::Table,
    /// `inbound.secret`, resolved: the secret the provider signs with.
    pub secret: Secret,
    /// `webhooks.listen`, when it is a valid address.
    pub listen: Option<SocketAddr>,
    /// The folder relative paths are resolved against.
    pub base_dir: &'a Path,
}

/// One inbound call, as the verifiers see it.
pub struct Call<'a> {
    /// The query string's pairs, decoded.
    pub query: Vec<(String, String)>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
    /// Our time when the call arrived (Unix ms).
    pub now_ms: u64,
    /// `webhooks.max_skew_s`, in ms.
    pub max_skew_ms: u64,
    /// Until when (Unix ms) this call would pass the time checks; set by
    /// them, so the replay cache keeps its id that long.
    pub fresh_until_ms: Cell<Option<u64>>,
}

impl Call<'_> {
    /// The first query parameter of that name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks a provider's time (Unix ms) against ours.
    pub fn check_fresh(&self, sent_ms: u64) -> Result<(), Refusal> {
        if self.now_ms.abs_diff(sent_ms) > self.max_skew_ms {
            Err(Refusal::Stale(format!(
                "its time is {} s away from ours; at most {} s is accepted",
                self.now_ms.abs_diff(sent_ms) / 1000,
                self.max_skew_ms / 1000
            )))
        } else {
            self.fresh_until(sent_ms.saturating_add(self.max_skew_ms));
            Ok(())
        }
    }

    /// Records that this call stays acceptable until `until_ms` (Unix ms).
    pub fn fresh_until(&self, until_ms: u64) {
        let until = self
            .fresh_until_ms
            .get()
            .map_or(until_ms, |u| u.max(until_ms));
        self.fresh_until_ms.set(Some(until));
    }
}

/// Why a call is refused. The texts name what is wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credential, or one that does not match.
    Forged(String),
    /// 403: signed, but too far from now.
    Stale(String),
    /// 400: not the provider's shape.
    Malformed(String),
}

impl Refusal {
    /// The HTTP status the call is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Forged(_) => StatusCode::UNAUTHORIZED,
            Refusal::Stale(_) => StatusCode::FORBIDDEN,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// What is wrong, for the answer and the log.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Forged(r) | Refusal::Stale(r) | Refusal::Malformed(r) => r,
        }
    }

    /// The metrics label of the refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::Forged(_) => "forged",
            Refusal::Stale(_) => "stale",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

/// What an authenticated call says.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// The provider's id for the call (message id, call id) or a hash of
    /// the body; a second call with the same key is a replay.
    pub dedup_key: String,
    /// The events it carries, not yet addressed to a channel.
    pub events: Vec<Incoming>,
}

/// An event before it is addressed to a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A chat message; becomes [`Event::ChatMessage`].
    Chat {
        /// The group, room, dialog or meeting it was said in.
        conversation: String,
        /// Who said it.
        sender_id: String,
        /// Their display name, when the provider gives it.
        sender_name: Option<String>,
        /// What they said.
        text: String,
        /// The provider's id of the message.
        message_id: Option<String>,
        /// When it was sent (Unix ms).
        sent_at_ms: Option<u64>,
    },
    /// A meeting event; becomes [`Event::Meeting`].
    Meeting {
        /// What happened.
        kind: MeetingEventKind,
        /// The meeting's id.
        meeting_id: String,
        /// The meeting's name.
        meeting_name: Option<String>,
        /// Who joined or left.
        user_id: Option<String>,
        /// Their display name.
        user_name: Option<String>,
    },
}

impl Incoming {
    /// The WIT event, on one of the provider's channels.
    pub fn on_channel(&self, channel: &str) -> Event {
        match self.clone() {
            Incoming::Chat {
                conversation,
                sender_id,
                sender_name,
                text,
                message_id,
                sent_at_ms,
            } => Event::ChatMessage(ChatMessage {
                channel: channel.into(),
                conversation,
                sender_id,
                sender_name,
                text,
                message_id,
                sent_at_ms,
            }),
            Incoming::Meeting {
                kind,
                meeting_id,
                meeting_name,
                user_id,
                user_name,
            } => Event::Meeting(MeetingEvent {
                channel: channel.into(),
                kind,
                meeting_id,
                meeting_name,
                user_id,
                user_name,
            }),
        }
    }
}

/// Bounds a string taken from a callback: control characters and bidi
/// controls stripped (a sender name with U+202E can make the line a plugin
/// echoes read backwards), at most `max` characters. `multiline` keeps
/// `\n` and `\t` (message text); ids and names are one line, so they also
/// lose line and paragraph separators.
pub fn clean(text: &str, max: usize, multiline: bool) -> String {
    text.chars()
        .filter(|&c| {
            if c == '\n' || c == '\t' {
                return multiline;
            }
            if c.is_control() || sanitize::is_bidi_control(c) {
                return false;
            }
            multiline || !matches!(c, '\u{2028}' | '\u{2029}')
        })
        .take(max)
        .collect()
}

/// An id or a name from a callback: one line, at most 256 characters.
pub fn clean_id(text: &str) -> String {
    clean(text, MAX_ID_CHARS, false)
}

/// Message text from a callback: at most 16,000 characters.
pub fn clean_text(text: &str) -> String {
    clean(text, MAX_TEXT_CHARS, true)
}

/// Compares two byte strings without leaking where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Parses `application/x-www-form-urlencoded` text into pairs.
pub fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// For `fuzz/` only: every provider's callback parser on an arbitrary body
/// and query, and the conversion of what it finds into WIT events. Returns
/// the events, for the fuzz target's own checks.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_parse(query: &[u8], headers: &HeaderMap, body: &[u8], now_ms: u64) -> Vec<Event> {
    let call = Call {
        query: form_pairs(query),
        headers,
        body,
        now_ms,
        max_skew_ms: 60_000,
        fresh_until_ms: Cell::new(None),
    };
    let empty = toml::Table::new();
    let mut events = Vec::new();
    for kind in super::KINDS {
        let Some(inbound) = kind.inbound else {
            continue;
        };
        let setup = InboundSetup {
            name: "fuzz",
            key: "providers.fuzz.inbound",
            table: &empty,
            options: &empty,
            secret: Secret::new("fuzz".into()),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            base_dir: Path::new("."),
        };
        let Ok(verifier) = (inbound.setup)(&setup) else {
            panic!("{}: no inbound from an empty section", kind.name);
        };
        match verifier.parse(&call) {
            Ok(parsed) => events.extend(parsed.events.iter().map(|i| i.on_channel("lobby"))),
            Err(refusal) => {
                let _ = (refusal.status(), refusal.outcome(), refusal.reason());
            }
        }
    }
    events
}

#[cfg(test)]
pub(crate) mod testing {
    //! Building calls in the providers' inbound tests.
    use super::*;

    /// A call with this query and body at `now_ms`, skew 60 s.
    pub fn call<'a>(headers: &'a HeaderMap, query: &str, body: &'a [u8], now_ms: u64) -> Call<'a> {
        Call {
            query: form_pairs(query.as_bytes()),
            headers,
            body,
            now_ms,
            max_skew_ms: 60_000,
            fresh_until_ms: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_stays_in_the_cache_while_its_time_check_would_pass() {
        let h = HeaderMap::new();
        let call = testing::call(&h, "", b"", 1_000_000);
        // Sent 50 s in our future: fresh until 110 s from now, not 60 s.
        call.check_fresh(1_050_000).unwrap();
        assert_eq!(call.fresh_until_ms.get(), Some(1_110_000));
    }

    #[test]
    fn clean_strips_controls_and_bounds_length() {
        assert_eq!(clean("a\u{1b}[31mb\nc", 100, true), "a[31mb\nc");
        assert_eq!(clean("abcdef", 3, true), "abc");
    }

    #[test]
    fn names_lose_newlines_and_every_text_loses_bidi_controls() {
        // "Ada\u{202e}nimda" shows as "Adaadmin"; a newline in a name can
        // forge a second line in whatever the plugin writes.
        let spoof = "Ada\u{202e}nimda\u{2066}\u{061c}\u{200f}\nSYSTEM: \u{2028}ok\tx";
        assert_eq!(clean_id(spoof), "AdanimdaSYSTEM: okx");
        assert_eq!(clean_text(spoof), "Adanimda\nSYSTEM: \u{2028}ok\tx");
        // Emoji sequences keep their joiners.
        assert_eq!(clean_id("👩\u{200d}💻"), "👩\u{200d}💻");
    }
}
