//! The outbox and the throttles' state, behind two traits, on SQLite or
//! PostgreSQL.
//!
//! - [`OutboxStore`]: every accepted message, on disk before its receipt
//!   exists, its parts, and (on a shared backend) which host holds it.
//! - [`ThrottleStore`]: each endpoint's throttle state, read, decided on
//!   (`Throttle::take`, the one decision) and written back atomically: in
//!   the host for one host ([`HostThrottles`], persisted to a [`SendLog`]),
//!   in the database for several ([`PgOutbox`]).
//!
//! What both backends share is written here once: the records and their
//! states, the tables' columns (`schema`, `COLUMNS`), the mapping of a
//! row to an [`OutboxRecord`] (`record_from`) and the parts' stored form
//! (`decode_parts`). `sqlite.rs` and `postgres.rs` hold only their SQL
//! and their connections. [`open`] turns `[storage]` into both stores.
//!
//! A message is `queued` until a worker takes it (`sending`), then ends
//! `delivered`, `partial`, `failed` or `cancelled`. Its parts (one per
//! meeting, dialog or text slice) are planned once and stored, so a retry or
//! a restart sends the same parts with the same dedup keys. A restart turns
//! `sending` back into `queued`: the host cannot know whether the request in
//! flight reached the provider, so it sends it again — harmless where the
//! provider has a dedup key (Tencent's `Random`), at-least-once elsewhere.
//!
//! A message's body is stored once, in its `messages` row. A part stores
//! only its target, its dedup key and the fields of its message that differ
//! from the message's own (a text slice's `content`, say); a message carried
//! inside another's request is named by its own row's id (see
//! `encode_part`). Finished, reported messages are deleted once
//! `storage.retention` has passed ([`prune_loop`]), a few at a time.

pub mod batch;
mod claim;
mod host;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use self::claim::Delivered;
pub use self::host::HostThrottles;
pub use self::postgres::PgOutbox;
pub use self::sqlite::SqliteOutbox;
use super::throttle::{Clock, SharedClock, Throttle, ThrottleKey};
use crate::providers::Part;
use crate::wit::types::Message;

/// Why the outbox or a throttle store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The SQLite file could not be opened.
    #[error("outbox `{path}`: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// A SQLite statement failed.
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record does not decode.
    #[error("outbox holds a record it cannot read: {0}")]
    Corrupt(String),
    /// A lock was poisoned by a panic, or a connection thread is gone.
    #[error("outbox is unavailable after an earlier failure")]
    Poisoned,
    /// The shared engine cannot be reached: nothing was read or written.
    #[error("shared outbox unavailable: {0}")]
    Unavailable(String),
    /// A PostgreSQL statement failed.
    #[error("shared outbox: {0}")]
    Postgres(String),
    /// Another host changed what this one was about to write over.
    #[error("outbox conflict: {0}")]
    Conflict(String),
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for its worker (or for its next attempt).
    Queued,
    /// Being sent.
    Sending,
    /// Every part delivered.
    Delivered,
    /// Some parts delivered, some failed.
    Partial,
    /// Nothing delivered.
    Failed,
    /// Cancelled before it was sent.
    Cancelled,
    /// Carried inside another message's request (a merged Tencent
    /// `MsgBody`); it ends with that message.
    Merged,
}

impl MessageState {
    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Delivered => "delivered",
            MessageState::Partial => "partial",
            MessageState::Failed => "failed",
            MessageState::Cancelled => "cancelled",
            MessageState::Merged => "merged",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<MessageState> {
        [
            MessageState::Queued,
            MessageState::Sending,
            MessageState::Delivered,
            MessageState::Partial,
            MessageState::Failed,
            MessageState::Cancelled,
            MessageState::Merged,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// Whether the message has ended (and is reported to its plugin).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MessageState::Queued | MessageState::Sending | MessageState::Merged
        )
    }
}

/// Where one part of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    /// Not sent yet.
    Queued,
    /// Delivered.
    Delivered,
    /// Failed for good.
    Failed,
}

impl PartState {
    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Queued => "queued",
            PartState::Delivered => "delivered",
            PartState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> PartState {
        match s {
            "delivered" => PartState::Delivered,
            "failed" => PartState::Failed,
            _ => PartState::Queued,
        }
    }
}

/// One message as stored.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// The receipt's id.
    pub id: String,
    /// The plugin that sent it.
    pub plugin: String,
    /// The channel it was sent to.
    pub channel: String,
    /// `provider-name/endpoint` it goes through.
    pub endpoint: String,
    /// The message as accepted.
    pub message: Message,
    /// Where it is in its life.
    pub state: MessageState,
    /// When it was accepted.
    pub created_ms: u64,
    /// When it is due (again).
    pub next_attempt_ms: u64,
    /// Provider requests made for it so far, and what the retry policy
    /// counts (plan and credential failures count as one each). Not the
    /// number of delivery attempts: a message to three meetings that went
    /// out at once holds 3. [`ListedMessage`] has both, per part.
    pub attempts: u32,
    /// Whether its parts are planned and stored.
    pub planned: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// The W3C `traceparent` of the span that accepted it, when a trace was
    /// being recorded: the worker that sends it (on any host) continues
    /// that trace.
    pub traceparent: Option<String>,
}

/// One part as stored.
#[derive(Debug, Clone)]
pub struct PartRecord {
    /// The part's position in its message.
    pub index: u32,
    /// What is sent.
    pub part: Part,
    /// Where it is.
    pub state: PartState,
    /// The provider's ids of what it delivered.
    pub provider_ids: Vec<String>,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
}

/// A message as `botbox outbox list` and the admin API show it: how many
/// times delivery was tried, and each part's own requests.
#[derive(Debug, Clone)]
pub struct ListedMessage {
    /// The message.
    pub record: OutboxRecord,
    /// Delivery attempts: how many times a worker took the message to send
    /// it (the first try, each retry, and a try a stopping host cut short).
    /// Kept across `botbox outbox retry`, unlike the retry policy's count.
    pub attempts: u32,
    /// The message whose request carried this one (a merged Tencent
    /// `MsgBody`), which then has no parts of its own.
    pub merged_into: Option<String>,
    /// Its parts, in order; none before it is planned.
    pub parts: Vec<PartProgress>,
}

impl ListedMessage {
    /// Provider requests made for the message: its parts' requests together.
    pub fn requests(&self) -> u32 {
        self.parts.iter().map(|p| p.requests).sum()
    }
}

/// One part of a [`ListedMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartProgress {
    /// The part's position in its message.
    pub index: u32,
    /// The conversation it goes to (a meeting, a dialog), or empty when the
    /// request itself is the broadcast.
    pub target: String,
    /// Where it is.
    pub state: PartState,
    /// Requests made for it: one each time it was sent, so a part that
    /// failed once and then went through has two. (A provider that renews
    /// its credentials and repeats the call inside one send, as Easemob
    /// after a 401 does, counts once.)
    pub requests: u32,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
}

/// One plugin's messages waiting on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginBacklog {
    /// The plugin.
    pub plugin: String,
    /// Its messages waiting.
    pub messages: usize,
    /// The provider requests they are expected to take.
    pub requests: usize,
}

/// Why the outbox cannot take a message now, for `/readyz`. The reason an
/// unauthenticated prober is shown ([`NotReady::reason`]) is fixed text;
/// the detail (files, servers, the engine's error) is for the operator's
/// log, through `Display`.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The backend could not be reached, or did not answer in time.
    #[error("outbox backend unreachable: {0}")]
    Unreachable(String),
    /// The outbox, or the folder it lives in, takes no writes.
    #[error("outbox not writable: {0}")]
    NotWritable(String),
}

impl NotReady {
    /// What may be said to anyone who asks: no path, host or error text.
    pub fn reason(&self) -> &'static str {
        match self {
            NotReady::Unreachable(_) => "outbox backend unreachable",
            NotReady::NotWritable(_) => "outbox not writable",
        }
    }
}

/// What `insert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    New,
    /// A message with the same idempotency key exists; its id.
    Duplicate(String),
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only messages in this state.
    pub state: Option<MessageState>,
    /// Only this plugin's.
    pub plugin: Option<String>,
    /// Only this channel's.
    pub channel: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// What a throttle store answered a worker asking to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The slot is taken and counted at this time (in the clock the
    /// reservation used); send now.
    Granted(u64),
    /// No slot yet; ask again after this many milliseconds of throttle time.
    Wait(u64),
    /// This host's claim on the message expired and another host holds it:
    /// leave the message alone.
    LeaseLost,
}

/// Where throttles keep their state, and take slots from it. The decision
/// itself is [`Throttle::take`](super::throttle::Throttle::take) over that
/// state, whichever store keeps it; a store only gives atomic
/// read-modify-write of one endpoint's state (SQLite's host: a mutex;
/// PostgreSQL: the endpoint's row `FOR UPDATE` in a transaction; Redis
/// would be `WATCH`/`MULTI` or a script). A new store is one file that
/// implements this trait, and one line in [`open`].
pub trait ThrottleStore: Send + Sync {
    /// Whether other hosts take slots from the same state. Then an idle
    /// worker also looks for messages they accepted, every
    /// [`SHARED_POLL`](super::SHARED_POLL).
    fn shared(&self) -> bool {
        false
    }
    /// Gets the endpoint's state ready: loads it from what was persisted
    /// when it is new here, when its limits changed, or when `reload`
    /// (after a config reload, the previous engine's last sends count).
    fn prepare(&self, _key: &ThrottleKey, _now_ms: u64, _reload: bool) -> Result<(), OutboxError> {
        Ok(())
    }
    /// When the `n`th request from now (1-based) could leave.
    fn estimate(&self, key: &ThrottleKey, n: usize, now_ms: u64) -> Result<u64, OutboxError>;
    /// The endpoint's state as it stands at `now_ms`, to show (`GET
    /// /endpoints`); takes no slot and changes nothing.
    fn state_at(&self, key: &ThrottleKey, now_ms: u64) -> Result<Throttle, OutboxError>;
    /// Takes a slot of the endpoint now for message `claim`, or says how
    /// long to wait. `scope` is the request's key (a Tencent group) when
    /// the endpoint is keyed: the request must fit every history of
    /// [`ThrottleKey::layers`], decided together by
    /// [`Throttle::take_all`](super::throttle::Throttle::take_all). A store
    /// that also keeps a shared outbox renews the claim in the same step,
    /// and refuses when another host holds it.
    fn take(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        claim: &str,
        clock: &dyn Clock,
    ) -> Result<Reservation, OutboxError>;
    /// Slots for several messages of one endpoint and request key at once,
    /// answered in the order of `claims`, each as [`ThrottleStore::take`]
    /// would answer it alone. A shared store decides them all in one
    /// transaction, and so locks the endpoint's state once for all; by
    /// default, one `take` after another.
    fn take_many(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        claims: &[&str],
        clock: &dyn Clock,
    ) -> Vec<Result<Reservation, OutboxError>> {
        claims
            .iter()
            .map(|claim| self.take(key, scope, claim, clock))
            .collect()
    }
    /// The request granted at `stamped_ms` was answered now (on `clock`):
    /// counts it as late as that allows, so a request that left late holds
    /// the next one for the real gap (see
    /// [`Throttle::answered`](super::throttle::Throttle::answered)).
    fn answered(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        stamped_ms: u64,
        clock: &dyn Clock,
    ) -> Result<(), OutboxError>;
    /// [`ThrottleStore::answered`] for several requests of one request
    /// key answered now, granted at `stamped_ms` (a stamp twice: two
    /// requests granted together). A shared store moves them in one
    /// statement; by default, one `answered` after another.
    fn answered_many(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        stamped_ms: &[u64],
        clock: &dyn Clock,
    ) -> Result<(), OutboxError> {
        stamped_ms
            .iter()
            .try_for_each(|stamp| self.answered(key, scope, *stamp, clock))
    }
    /// The provider reported `cost_ms` of its own execution time (in the
    /// throttle clock's milliseconds) for the request granted at
    /// `stamped_ms`, such as Bitrix24's `time.operating`: counted against
    /// the endpoint's budgets ([`Limit::Budget`](super::throttle::Limit)).
    fn charge(&self, key: &ThrottleKey, stamped_ms: u64, cost_ms: u64) -> Result<(), OutboxError>;
    /// The provider answered "too fast" for the history `layer` (one of
    /// `key`'s [`ThrottleKey::layers`]): halves its allowed rate now, to
    /// recover gradually (see [`Slowdown`](super::throttle::Slowdown)), for
    /// every worker that uses it. Returns the fraction of the documented
    /// rate now allowed.
    fn slow_down(
        &self,
        key: &ThrottleKey,
        layer: &super::throttle::Layer,
        clock: &dyn Clock,
    ) -> Result<f64, OutboxError>;
}

/// A host's own record of its sends, which its throttles reload after a
/// restart (see [`HostThrottles`]). SQLite keeps it beside the outbox.
pub trait SendLog: Send + Sync {
    /// Counts a send of `endpoint` at `at_ms`.
    fn record_send(&self, endpoint: &str, at_ms: u64) -> Result<(), OutboxError>;
    /// The sends of `endpoint` since `since_ms`, oldest first.
    fn sends_since(&self, endpoint: &str, since_ms: u64) -> Result<Vec<u64>, OutboxError>;
    /// Forgets every history's sends before `before_ms`: the histories of
    /// keys nobody sends to any more (a group gone quiet) are never read
    /// again, so nothing else would delete them.
    /// A log that keeps nothing (a benchmark's) has nothing to forget.
    fn forget_before(&self, _before_ms: u64) -> Result<usize, OutboxError> {
        Ok(0)
    }
}

/// How long any send is kept: no documented limit counts further back than
/// a day, and a calendar day reaches at most a day back; twice that is
/// a safe margin.
pub const SEND_HISTORY_MS: u64 = 2 * 86_400_000;

/// The outbox seam: SQLite for one host, PostgreSQL for several (see
/// [`postgres`]). Messages, their parts, and the claims on them.
pub trait OutboxStore: Send + Sync {
    /// How long a claim outlives a host that stopped renewing it, when
    /// messages are claimed (several hosts share the outbox): then
    /// `next_due` claims the message it returns. `None` on one host.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Stores a new message, unless one with its idempotency key exists.
    fn insert(&self, record: &OutboxRecord) -> Result<Inserted, OutboxError>;
    /// Like `insert`, noting how many provider requests the message is
    /// expected to take (targets times split parts), which admission counts.
    fn insert_costed(
        &self,
        record: &OutboxRecord,
        _requests: u32,
    ) -> Result<Inserted, OutboxError> {
        self.insert(record)
    }
    /// Messages waiting on an endpoint (queued or being sent).
    fn pending_count(&self, endpoint: &str) -> Result<usize, OutboxError>;
    /// The next due message of an endpoint, taking plugins in turn: the
    /// first plugin (by name) after `after_plugin` that has one due.
    fn next_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        after_plugin: Option<&str>,
    ) -> Result<Option<OutboxRecord>, OutboxError>;
    /// Claims up to `limit` due messages of an endpoint at once, marking
    /// each as being sent (a delivery attempt counted, a shared store's
    /// claim taken), plugins taking turns as in [`next_due`](Self::next_due)
    /// starting after `after_plugin`: the worker's one write for a batch.
    /// A backend that cannot do it in one step takes them one at a time.
    fn claim_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        limit: usize,
        after_plugin: Option<&str>,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut claimed: Vec<OutboxRecord> = Vec::new();
        let mut after = after_plugin.map(str::to_string);
        while claimed.len() < limit {
            let Some(mut record) = self.next_due(endpoint, now_ms, after.as_deref())? else {
                break;
            };
            self.mark_sending(&record.id)?;
            record.state = MessageState::Sending;
            after = Some(record.plugin.clone());
            claimed.push(record);
        }
        Ok(claimed)
    }
    /// Ends messages whose last part was just delivered (see
    /// [`Delivered`]), together: each part's request counted and the part
    /// delivered, each message (and those merged into it) delivered. The
    /// worker's one write for every message that finished meanwhile.
    fn delivered(&self, done: &[Delivered]) -> Result<(), OutboxError> {
        for d in done {
            self.part_requested(&d.id, d.index)?;
            self.part_done(&d.id, d.index, PartState::Delivered, &d.provider_ids, None)?;
            self.finish(
                &d.id,
                MessageState::Delivered,
                d.attempts,
                d.finished_ms,
                None,
            )?;
        }
        Ok(())
    }
    /// When the endpoint's next queued message falls due.
    fn next_due_time(&self, endpoint: &str) -> Result<Option<u64>, OutboxError>;
    /// Marks a message as being sent (and renews a shared store's claim).
    fn mark_sending(&self, id: &str) -> Result<(), OutboxError>;
    /// Stores a message's parts, and marks `absorbed` messages as carried
    /// inside them, in one transaction.
    fn save_plan(&self, id: &str, parts: &[Part], absorbed: &[String]) -> Result<(), OutboxError>;
    /// Stores several messages' plans, each as [`save_plan`](Self::save_plan)
    /// would, answering each in order: a plan refused (a member taken
    /// meanwhile) fails alone. A backend that can stores them all in one
    /// transaction, so the messages a worker starts together share one
    /// commit, each still on disk before its first request.
    fn save_plans(&self, plans: &[Plan]) -> Vec<Result<(), OutboxError>> {
        plans
            .iter()
            .map(|p| self.save_plan(&p.id, &p.parts, &p.absorbed))
            .collect()
    }
    /// Queued, never-planned, due messages of a channel other than
    /// `except`, oldest first: what a merge may take along.
    fn mergeable(
        &self,
        endpoint: &str,
        channel: &str,
        now_ms: u64,
        except: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// The messages carried inside `id`'s request.
    fn members(&self, id: &str) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// A message's stored parts, in order.
    fn parts(&self, id: &str) -> Result<Vec<PartRecord>, OutboxError>;
    /// Counts a request for part `index` of message `id`, just answered
    /// (or failed). The worker calls it after the answer, so no write sits
    /// between the throttle's slot and the request; a request in flight
    /// when the host dies is not counted.
    fn part_requested(&self, id: &str, index: u32) -> Result<(), OutboxError>;
    /// Records how a part ended.
    fn part_done(
        &self,
        id: &str,
        index: u32,
        state: PartState,
        provider_ids: &[String],
        error: Option<&str>,
    ) -> Result<(), OutboxError>;
    /// Puts a message back in the queue until `next_attempt_ms`.
    fn requeue(
        &self,
        id: &str,
        next_attempt_ms: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), OutboxError>;
    /// Ends a message (and the messages merged into it).
    fn finish(
        &self,
        id: &str,
        state: MessageState,
        attempts: u32,
        finished_ms: u64,
        error: Option<&str>,
    ) -> Result<(), OutboxError>;
    /// After a crash: messages left `sending` go back to `queued`.
    fn recover(&self) -> Result<usize, OutboxError>;
    /// One message.
    fn get(&self, id: &str) -> Result<Option<OutboxRecord>, OutboxError>;
    /// Messages matching `filter`, newest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// [`list`](Self::list), with each message's delivery attempts and its
    /// parts' requests: what `botbox outbox list` and the admin API show.
    fn list_progress(&self, filter: &ListFilter) -> Result<Vec<ListedMessage>, OutboxError>;
    /// Cancels a message that has not ended; false if there is none.
    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError>;
    /// Queues a failed, partial or cancelled message again; false if there is none.
    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError>;
    /// Finished messages whose report has not reached the plugin yet.
    fn unreported(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// The plugins that have reports waiting, at most `limit` of them.
    fn unreported_plugins(&self, limit: usize) -> Result<Vec<String>, OutboxError>;
    /// One plugin's waiting reports, oldest first.
    fn unreported_of(&self, plugin: &str, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// Messages waiting on an endpoint (queued or being sent), by plugin.
    fn pending_by_plugin(&self, endpoint: &str) -> Result<Vec<PluginBacklog>, OutboxError>;
    /// Notes that a finished message's report reached its plugin.
    fn mark_reported(&self, id: &str) -> Result<(), OutboxError>;
    /// Whether a message could be stored now: a cheap real write, in the
    /// backend's own terms (see each backend). Blocks; for `/readyz`.
    fn ready(&self) -> Result<(), NotReady>;
    /// Deletes up to `limit` messages that finished before `before_ms` and
    /// were reported, with their parts and the messages merged into them;
    /// returns how many it deleted (merged ones not counted).
    fn prune(&self, before_ms: u64, limit: usize) -> Result<usize, OutboxError>;
}

/// A message's plan, as [`OutboxStore::save_plans`] stores it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The message.
    pub id: String,
    /// Its parts, in order.
    pub parts: Vec<Part>,
    /// The queued messages carried inside them.
    pub absorbed: Vec<String>,
}

/// What each plan of a [`OutboxStore::save_plans`] batch hears: its own
/// answer when the batch's transaction committed, else that transaction's
/// error, since then no plan of it is stored.
pub(crate) fn plan_answers(
    saved: Result<Vec<Result<(), OutboxError>>, OutboxError>,
    count: usize,
) -> Vec<Result<(), OutboxError>> {
    match saved {
        Ok(answers) => answers,
        Err(e) => {
            let e = e.to_string();
            (0..count)
                .map(|_| Err(OutboxError::Unavailable(e.clone())))
                .collect()
        }
    }
}

/// The two stores a delivery engine works with. Usually one backend is
/// both (`Stores::from(Arc::new(outbox))`), but nothing requires it: a
/// throttle store of its own (Redis, say) goes beside any outbox.
#[derive(Clone)]
pub struct Stores {
    /// Messages, parts, claims.
    pub outbox: Arc<dyn OutboxStore>,
    /// The throttles' state.
    pub throttles: Arc<dyn ThrottleStore>,
}

impl<T: OutboxStore + SendLog + 'static> From<Arc<T>> for Stores {
    /// A store for one host: its throttles decide in the host and keep
    /// their history in `store`.
    fn from(store: Arc<T>) -> Stores {
        Stores {
            outbox: store.clone(),
            throttles: Arc::new(HostThrottles::new(store)),
        }
    }
}

impl From<Arc<PgOutbox>> for Stores {
    /// A shared database: it keeps the outbox and the throttles.
    fn from(store: Arc<PgOutbox>) -> Stores {
        Stores {
            outbox: store.clone(),
            throttles: store,
        }
    }
}

/// The configured storage, opened: its stores, and the clock the
/// throttles count in.
pub struct Opened {
    /// The outbox and the throttles' state.
    pub stores: Stores,
    /// The wall clock, or under `runtime.time_scale` a scaled one; on a
    /// shared backend every host's scaled clock counts from one origin.
    pub clock: SharedClock,
}

/// Opens what `[storage]` names (see [`crate::storage::Location`]): the
/// one place that knows which backends exist. `time_scale`:
/// `runtime.time_scale`; 1 for the wall clock. `time_origin_ms`:
/// `runtime.time_origin_ms`, where a one-host scaled clock counts from.
pub fn open(
    storage: &crate::config::StorageConfig,
    time_scale: f64,
    time_origin_ms: Option<u64>,
) -> Result<Opened, OutboxError> {
    use super::throttle::{ScaledClock, SystemClock};
    use crate::storage::Location;
    let real_time = time_scale == 1.0;
    match Location::of(storage) {
        Location::Sqlite(path) => {
            let store = Arc::new(SqliteOutbox::open(&path)?);
            let clock: SharedClock = if real_time {
                Arc::new(SystemClock)
            } else if let Some(origin) = time_origin_ms {
                // A simulator started at `origin` shares this calendar.
                Arc::new(ScaledClock::anchored(time_scale, origin))
            } else {
                Arc::new(ScaledClock::new(time_scale))
            };
            Ok(Opened {
                stores: store.into(),
                clock,
            })
        }
        Location::Postgres { url, lease } => {
            let store = Arc::new(PgOutbox::open(&url, lease)?);
            let clock: SharedClock = if real_time {
                Arc::new(SystemClock)
            } else {
                // Hosts sharing a throttle must share its scaled time: the
                // first host to open the store sets its origin (its
                // `time_origin_ms` if set, else its start), the others read it.
                let origin =
                    store.clock_origin(time_origin_ms.unwrap_or_else(|| SystemClock.now_ms()))?;
                Arc::new(ScaledClock::anchored(time_scale, origin))
            };
            Ok(Opened {
                stores: store.into(),
                clock,
            })
        }
    }
}

/// Messages deleted per transaction: small, so an accept waits at most one
/// short batch for the outbox.
pub const PRUNE_BATCH: usize = 200;

/// How often the pruner looks for expired messages.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Deletes finished messages older than `retention` (in the outbox's clock)
/// now and every minute until `stop`, in batches of [`PRUNE_BATCH`] on the
/// blocking pool, yielding between batches so accepts go first.
pub async fn prune_loop(
    outbox: Arc<dyn OutboxStore>,
    clock: SharedClock,
    retention: Duration,
    stop: CancellationToken,
) {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    loop {
        let before = clock.now_ms().saturating_sub(retention_ms);
        let mut total = 0;
        loop {
            let store = outbox.clone();
            let batch = tokio::task::spawn_blocking(move || store.prune(before, PRUNE_BATCH)).await;
            match batch {
                Ok(Ok(n)) => {
                    total += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!("cannot prune the outbox (trying again in a minute): {e}");
                    break;
                }
                Err(e) => {
                    tracing::warn!("outbox pruning stopped: {e}");
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(
                pruned = total,
                "deleted finished messages older than storage.retention"
            );
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// A part as stored: what differs from the message it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPart {
    /// The format: 2. Earlier hosts stored a whole [`Part`], which has none.
    v: u32,
    target: String,
    dedup_key: Option<String>,
    /// The fields of the part's message that differ from the message's.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    changed: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    merged: Vec<StoredMerged>,
}

/// A message carried in a part's request.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredMerged {
    /// Equal to the message stored under this id (it was merged in).
    Member(String),
    /// Any other: the fields that differ from the owning message's.
    Changed(Map<String, Value>),
}

const PART_FORMAT: u32 = 2;

fn to_object(message: &Message) -> Result<Map<String, Value>, OutboxError> {
    match serde_json::to_value(message) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(OutboxError::Corrupt(
            "a message did not encode as a JSON object".into(),
        )),
        Err(e) => Err(OutboxError::Corrupt(e.to_string())),
    }
}

/// The fields of `message` whose value differs from `base`'s.
fn changed_fields(
    base: &Map<String, Value>,
    message: &Message,
) -> Result<Map<String, Value>, OutboxError> {
    Ok(to_object(message)?
        .into_iter()
        .filter(|(k, v)| base.get(k) != Some(v))
        .collect())
}

fn with_changes(base: &Map<String, Value>, changed: Map<String, Value>) -> Result<Message, String> {
    let mut object = base.clone();
    object.extend(changed);
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

/// Encodes `part` of a message whose body is `owner`; `members` are the
/// messages merged into it, with their ids. What is equal to the owner or
/// to a member is not stored again.
pub(crate) fn encode_part(
    owner: &Message,
    members: &[(String, Message)],
    part: &Part,
) -> Result<String, OutboxError> {
    let base = to_object(owner)?;
    let mut merged = Vec::with_capacity(part.merged.len());
    for m in &part.merged {
        merged.push(match members.iter().find(|(_, member)| member == m) {
            Some((id, _)) => StoredMerged::Member(id.clone()),
            None => StoredMerged::Changed(changed_fields(&base, m)?),
        });
    }
    json(&StoredPart {
        v: PART_FORMAT,
        target: part.target.clone(),
        dedup_key: part.dedup_key.clone(),
        changed: changed_fields(&base, &part.message)?,
        merged,
    })
}

/// Rewrites a part stored in the old whole-`Part` format of message `id`
/// (stored body `owner`; `members`: the ids and stored bodies of the
/// messages merged into it) in the current one.
pub(crate) fn reencode_part(
    id: &str,
    idx: i64,
    stored: &str,
    owner: &str,
    members: &[(String, String)],
) -> Result<String, OutboxError> {
    let owner = parse_message(id, owner)?;
    let members: Vec<(String, Message)> = members
        .iter()
        .filter_map(|(mid, text)| Some((mid.clone(), parse_message(mid, text).ok()?)))
        .collect();
    let part: Part = serde_json::from_str(stored)
        .map_err(|e| OutboxError::Corrupt(format!("part {id}/{idx}: {e}")))?;
    encode_part(&owner, &members, &part)
}

/// Whether a stored part is in the current format (or a whole `Part`, as
/// hosts before it wrote).
pub(crate) fn is_current(stored: &str) -> bool {
    serde_json::from_str::<Value>(stored)
        .ok()
        .and_then(|v| v.get("v").and_then(Value::as_u64))
        == Some(u64::from(PART_FORMAT))
}

/// Decodes a stored part of the message `owner`; `member` reads a merged
/// message's own row. Reads the older whole-`Part` format too.
pub(crate) fn decode_part(
    stored: &str,
    owner: &Message,
    member: &mut dyn FnMut(&str) -> Result<Message, OutboxError>,
) -> Result<Part, String> {
    if !is_current(stored) {
        return serde_json::from_str::<Part>(stored).map_err(|e| e.to_string());
    }
    let s: StoredPart = serde_json::from_str(stored).map_err(|e| e.to_string())?;
    let base = to_object(owner).map_err(|e| e.to_string())?;
    let mut merged = Vec::with_capacity(s.merged.len());
    for m in s.merged {
        merged.push(match m {
            StoredMerged::Member(id) => member(&id).map_err(|e| e.to_string())?,
            StoredMerged::Changed(changed) => with_changes(&base, changed)?,
        });
    }
    Ok(Part {
        target: s.target,
        message: with_changes(&base, s.changed)?,
        dedup_key: s.dedup_key,
        merged,
    })
}

fn parse_message(id: &str, text: &str) -> Result<Message, OutboxError> {
    serde_json::from_str(text).map_err(|e| OutboxError::Corrupt(format!("message {id}: {e}")))
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String, OutboxError> {
    serde_json::to_string(value).map_err(|e| OutboxError::Corrupt(e.to_string()))
}

/// How a backend spells the types of the shared tables.
pub(crate) struct Dialect {
    /// Before every table and index name: `botbox_` in a shared database.
    pub prefix: &'static str,
    /// A millisecond timestamp.
    pub ms: &'static str,
    /// A flag, and its false value.
    pub flag: &'static str,
    pub no: &'static str,
    /// Columns only this backend's messages have, each ending in a comma.
    pub message_columns: &'static str,
    /// After the parts table's definition.
    pub parts_options: &'static str,
}

/// The tables both backends keep (messages, parts, sends), written once.
/// Each backend adds its own after them (PostgreSQL: claims and the shared
/// clock; SQLite: the columns older files lack).
pub(crate) fn schema(d: &Dialect) -> String {
    let Dialect {
        prefix: p,
        ms,
        flag,
        no,
        message_columns,
        parts_options,
    } = d;
    format!(
        "
CREATE TABLE IF NOT EXISTS {p}messages (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    channel TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    message TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL,
    created_ms {ms} NOT NULL,
    next_attempt_ms {ms} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    planned {flag} NOT NULL DEFAULT {no},
    last_error TEXT,
    finished_ms {ms},
    reported {flag} NOT NULL DEFAULT {no},
    merged_into TEXT,{message_columns}
    requests INTEGER NOT NULL DEFAULT 1,
    traceparent TEXT,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (plugin, channel, idempotency_key)
);
CREATE INDEX IF NOT EXISTS {p}messages_due ON {p}messages (endpoint, state, plugin, next_attempt_ms);
CREATE INDEX IF NOT EXISTS {p}messages_unreported ON {p}messages (reported, state);
CREATE INDEX IF NOT EXISTS {p}messages_finished ON {p}messages (finished_ms) WHERE finished_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS {p}parts (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    part TEXT NOT NULL,
    state TEXT NOT NULL,
    provider_ids TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, idx)
){parts_options};
CREATE TABLE IF NOT EXISTS {p}sends (
    endpoint TEXT NOT NULL,
    at_ms {ms} NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}sends_by_endpoint ON {p}sends (endpoint, at_ms);
"
    )
}

/// The columns an [`OutboxRecord`] is read from, in [`record_from`]'s order.
pub(crate) const COLUMNS: &str = "id, plugin, channel, endpoint, message, state, created_ms, next_attempt_ms, attempts, planned, last_error, finished_ms, traceparent";

/// One row, as a backend's driver reads its columns by position.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<String, OutboxError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, OutboxError>;
    fn int(&self, i: usize) -> Result<i64, OutboxError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, OutboxError>;
    fn flag(&self, i: usize) -> Result<bool, OutboxError>;
}

/// A row of [`COLUMNS`] as a record.
pub(crate) fn record_from(row: &impl Columns) -> Result<OutboxRecord, OutboxError> {
    let id = row.text(0)?;
    let message = parse_message(&id, &row.text(4)?)?;
    let state = row.text(5)?;
    let Some(state) = MessageState::parse(&state) else {
        return Err(OutboxError::Corrupt(format!(
            "message {id}: unknown state `{state}`"
        )));
    };
    Ok(OutboxRecord {
        plugin: row.text(1)?,
        channel: row.text(2)?,
        endpoint: row.text(3)?,
        message,
        state,
        created_ms: row.int(6)? as u64,
        next_attempt_ms: row.int(7)? as u64,
        attempts: row.int(8)? as u32,
        planned: row.flag(9)?,
        last_error: row.opt_text(10)?,
        finished_ms: row.opt_int(11)?.map(|v| v as u64),
        traceparent: row.opt_text(12)?,
        id,
    })
}

/// What a listing reads after [`COLUMNS`]: the message's delivery
/// attempts and the message that carried it.
pub(crate) const LISTED_COLUMNS: &str = "delivery_attempts, merged_into";

/// The columns a part's progress is read from, in [`progress_row`]'s order.
pub(crate) const PROGRESS_COLUMNS: &str = "message_id, idx, part, state, requests, last_error";

/// A row of [`COLUMNS`] then [`LISTED_COLUMNS`], partless.
/// How many of [`COLUMNS`] a record takes: the listed columns follow.
const RECORD_WIDTH: usize = 13;

pub(crate) fn listed_from(row: &impl Columns) -> Result<ListedMessage, OutboxError> {
    Ok(ListedMessage {
        record: record_from(row)?,
        attempts: u32::try_from(row.int(RECORD_WIDTH)?).unwrap_or(0),
        merged_into: row.opt_text(RECORD_WIDTH + 1)?,
        parts: Vec::new(),
    })
}

/// A row of [`PROGRESS_COLUMNS`]: the message it belongs to, and the part.
pub(crate) fn progress_row(row: &impl Columns) -> Result<(String, PartProgress), OutboxError> {
    /// Both part formats (the current one and a whole `Part`) keep the
    /// target at the top, so a listing reads it without the message body.
    #[derive(serde::Deserialize)]
    struct Target {
        target: String,
    }
    let id = row.text(0)?;
    let idx = row.int(1)?;
    let target = serde_json::from_str::<Target>(&row.text(2)?)
        .map_err(|e| OutboxError::Corrupt(format!("part {id}/{idx}: {e}")))?
        .target;
    Ok((
        id,
        PartProgress {
            index: u32::try_from(idx).unwrap_or(0),
            target,
            state: PartState::parse(&row.text(3)?),
            requests: u32::try_from(row.int(4)?).unwrap_or(0),
            last_error: row.opt_text(5)?,
        },
    ))
}

/// Hands each part to its message, keeping their order.
pub(crate) fn attach_parts(
    listed: &mut [ListedMessage],
    parts: impl IntoIterator<Item = (String, PartProgress)>,
) {
    let at: HashMap<String, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, m)| (m.record.id.clone(), i))
        .collect();
    for (id, part) in parts {
        if let Some(&i) = at.get(&id) {
            listed[i].parts.push(part);
        }
    }
    for m in listed {
        m.parts.sort_by_key(|p| p.index);
    }
}

/// The columns a part is read from, in [`part_row`]'s order.
pub(crate) const PART_COLUMNS: &str = "idx, part, state, provider_ids, last_error";

/// One stored part, not decoded yet.
pub(crate) struct PartRow {
    idx: i64,
    part: String,
    state: String,
    provider_ids: String,
    last_error: Option<String>,
}

/// A row of [`PART_COLUMNS`].
pub(crate) fn part_row(row: &impl Columns) -> Result<PartRow, OutboxError> {
    Ok(PartRow {
        idx: row.int(0)?,
        part: row.text(1)?,
        state: row.text(2)?,
        provider_ids: row.text(3)?,
        last_error: row.opt_text(4)?,
    })
}

/// Decodes message `id`'s stored parts. `owner`: its stored body (`None`:
/// it is gone); `members`: the ids and stored bodies of the messages merged
/// into it, which its parts name.
pub(crate) fn decode_parts(
    id: &str,
    rows: Vec<PartRow>,
    owner: Option<String>,
    members: Vec<(String, String)>,
) -> Result<Vec<PartRecord>, OutboxError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let owner = owner.ok_or_else(|| {
        OutboxError::Corrupt(format!("parts of message {id}, which is not in the outbox"))
    })?;
    let owner = parse_message(id, &owner)?;
    let members: HashMap<String, Message> = members
        .into_iter()
        .filter_map(|(mid, text)| Some((mid, serde_json::from_str(&text).ok()?)))
        .collect();
    let mut member = |mid: &str| -> Result<Message, OutboxError> {
        members.get(mid).cloned().ok_or_else(|| {
            OutboxError::Corrupt(format!(
                "message {mid}, merged into {id}, is not in the outbox"
            ))
        })
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let idx = row.idx;
        let part = decode_part(&row.part, &owner, &mut member)
            .map_err(|e| OutboxError::Corrupt(format!("part {id}/{idx}: {e}")))?;
        out.push(PartRecord {
            index: idx as u32,
            part,
            state: PartState::parse(&row.state),
            provider_ids: serde_json::from_str(&row.provider_ids).unwrap_or_default(),
            last_error: row.last_error,
        });
    }
    Ok(out)
}

/// What `save_plan` does when a message it was to carry inside another's
/// request is no longer queued (another host took it, or it was cancelled
/// meanwhile): carrying it anyway would send it twice, or send what was
/// cancelled. The plan is refused, nothing is written, and the caller plans
/// again (the worker requeues the message), on every backend.
pub(crate) fn member_taken(member: &str, id: &str) -> OutboxError {
    OutboxError::Conflict(format!(
        "message {member} was taken by another host while {id} was merging it"
    ))
}
