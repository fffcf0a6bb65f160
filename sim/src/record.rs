//! What the simulators saw: every request, every accepted delivery, and every
//! request that arrived when the provider's documented limits did not allow it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fault::Fault;
use crate::lock;

/// The simulated providers (each has its `SimKind` in `kind::KINDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimProvider {
    Bbb,
    Tencent,
    Easemob,
    Bitrix,
}

impl SimProvider {
    pub const ALL: [SimProvider; 4] = [
        SimProvider::Bbb,
        SimProvider::Tencent,
        SimProvider::Easemob,
        SimProvider::Bitrix,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SimProvider::Bbb => "bbb",
            SimProvider::Tencent => "tencent",
            SimProvider::Easemob => "easemob",
            SimProvider::Bitrix => "bitrix",
        }
    }
}

impl fmt::Display for SimProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who an accepted delivery went to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// BigBlueButton: the public chat of one meeting.
    Meeting { id: String },
    /// Tencent: every audio-video group (AVChatRoom) of the app.
    AllAvChatRooms,
    /// Easemob `/messages/broadcast`.
    AllUsers,
    /// Easemob `/messages/users/broadcast`.
    OnlineUsers,
    /// Easemob `/messages/chatrooms/broadcast`, with its `chatroom_msg_level`.
    ActiveChatRooms { level: String },
    /// Tencent `send_group_msg` / Easemob `/messages/chatgroups`: one group.
    Group { id: String },
    /// Easemob `/messages/chatrooms`: one chat room.
    ChatRoom { id: String },
    /// Easemob `/messages/users` / Tencent `openim/sendmsg`: one user.
    Account { id: String },
    /// Bitrix24 `DIALOG_ID=chatN`.
    Chat { id: u64 },
    /// Bitrix24 `DIALOG_ID=N` (a private dialog with user N).
    User { id: u64 },
}

/// One accepted message, as the provider would have shown it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimDelivery {
    /// Order of acceptance across all providers, from 1.
    pub seq: u64,
    pub provider: SimProvider,
    /// The endpoint name (see [`crate::endpoints`]).
    pub endpoint: String,
    pub target: Target,
    /// userName / From_Account / from / the acting Bitrix user.
    pub sender: Option<String>,
    /// The provider-specific content as received (message text, MsgBody, msg + ext, …).
    pub content: Value,
    /// The id the provider answered with (MsgSeq, broadcast id, message id, …).
    pub provider_id: String,
    /// Simulated time since the simulator started.
    pub at: Duration,
    pub unix_ms: u64,
}

impl SimDelivery {
    /// The text of a text message, when the delivery has one.
    pub fn text(&self) -> Option<String> {
        (crate::kind::kind(self.provider).text)(&self.content)
    }
}

/// How the simulator answered one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Answered successfully without delivering anything (getMeetings, token, …).
    Ok,
    /// A message was accepted and recorded as a delivery.
    Delivered,
    /// Tencent: answered OK but discarded as a repeat of an earlier `Random`.
    Deduplicated,
    /// Refused; `code` is the provider's error key (messageKey, ErrorCode, `error`).
    Rejected { status: u16, code: String },
    /// An injected fault answered instead of the provider logic.
    Faulted,
}

/// One request as it arrived, with secrets stripped from the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRequest {
    pub seq: u64,
    pub provider: SimProvider,
    pub endpoint: String,
    pub method: String,
    /// The path without query string; a Bitrix webhook code reads `***`.
    pub path: String,
    pub outcome: Outcome,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
    pub at: Duration,
    pub unix_ms: u64,
}

/// A request that arrived when the provider's documented limit did not allow
/// it. A correct client causes none; forced rate-limit faults are not violations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub provider: SimProvider,
    pub endpoint: String,
    /// The limit that was exceeded, e.g. "1 per 30 min" or "3 per day".
    pub limit: String,
    /// The provider's error code that was returned (10023, 429, 403, QUERY_LIMIT_EXCEEDED).
    pub code: String,
    pub at: Duration,
    pub unix_ms: u64,
}

/// Counters that survive the bounded record lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub requests: u64,
    pub deliveries: u64,
    pub rejected: u64,
    pub faults: u64,
    pub deduplicated: u64,
    pub violations: u64,
    pub token_fetches: u64,
}

/// Long-running demos must not grow without bound; tests never come close.
const MAX_KEPT: usize = 100_000;

#[derive(Default)]
pub(crate) struct Records {
    inner: Mutex<RecordsInner>,
}

#[derive(Default)]
struct RecordsInner {
    next_seq: u64,
    next_delivery: u64,
    requests: VecDeque<SimRequest>,
    deliveries: VecDeque<SimDelivery>,
    violations: VecDeque<Violation>,
    stats: BTreeMap<SimProvider, SimStats>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() >= MAX_KEPT {
        q.pop_front();
    }
    q.push_back(item);
}

impl Records {
    pub(crate) fn request(&self, mut r: SimRequest) {
        let mut g = lock(&self.inner);
        g.next_seq += 1;
        r.seq = g.next_seq;
        let stats = g.stats.entry(r.provider).or_default();
        stats.requests += 1;
        match r.outcome {
            Outcome::Rejected { .. } => stats.rejected += 1,
            Outcome::Faulted => stats.faults += 1,
            Outcome::Deduplicated => stats.deduplicated += 1,
            Outcome::Ok | Outcome::Delivered => {}
        }
        if r.fault.is_some() && r.outcome != Outcome::Faulted {
            stats.faults += 1;
        }
        push_bounded(&mut g.requests, r);
    }

    /// Records a delivery and returns its sequence number.
    pub(crate) fn delivery(&self, mut d: SimDelivery) -> u64 {
        let mut g = lock(&self.inner);
        g.next_delivery += 1;
        d.seq = g.next_delivery;
        g.stats.entry(d.provider).or_default().deliveries += 1;
        let seq = d.seq;
        push_bounded(&mut g.deliveries, d);
        seq
    }

    pub(crate) fn violation(&self, v: Violation) {
        tracing::warn!(
            target: "botbox_sim",
            "{:<8} RATE-LIMIT VIOLATION {} ({}): answered {}",
            v.provider.as_str(),
            v.endpoint,
            v.limit,
            v.code
        );
        let mut g = lock(&self.inner);
        g.stats.entry(v.provider).or_default().violations += 1;
        push_bounded(&mut g.violations, v);
    }

    pub(crate) fn token_fetch(&self, provider: SimProvider) {
        lock(&self.inner)
            .stats
            .entry(provider)
            .or_default()
            .token_fetches += 1;
    }

    pub(crate) fn requests(&self) -> Vec<SimRequest> {
        lock(&self.inner).requests.iter().cloned().collect()
    }

    pub(crate) fn deliveries(&self) -> Vec<SimDelivery> {
        lock(&self.inner).deliveries.iter().cloned().collect()
    }

    pub(crate) fn violations(&self) -> Vec<Violation> {
        lock(&self.inner).violations.iter().cloned().collect()
    }

    pub(crate) fn stats(&self, provider: SimProvider) -> SimStats {
        lock(&self.inner)
            .stats
            .get(&provider)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn clear(&self) {
        let mut g = lock(&self.inner);
        g.requests.clear();
        g.deliveries.clear();
        g.violations.clear();
        g.stats.clear();
    }
}

/// Makes untrusted text safe for a one-line log: control and bidi characters
/// are escaped (so a message cannot forge log lines) and long text is cut.
pub fn escape_for_log(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    for (n, c) in s.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_escaping_keeps_one_line() {
        assert_eq!(
            escape_for_log("a\nb\x1b[31m\u{202e}", 100),
            "a\\nb\\u{1b}[31m\\u{202e}"
        );
        assert_eq!(escape_for_log("abcdef", 3), "abc…");
    }
}
