//! The outbox: every accepted message, on disk before its receipt exists.
//!
//! A message is `queued` until a worker takes it (`sending`), then ends
//! `delivered`, `partial`, `failed` or `cancelled`. Its parts (one per
//! meeting, dialog or text slice) are planned once and stored, so a retry or
//! a restart sends the same parts with the same dedup keys. A restart turns
//! `sending` back into `queued`: the host cannot know whether the request in
//! flight reached the provider, so it sends it again — harmless where the
//! provider has a dedup key (Tencent's `Random`), at-least-once elsewhere.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::throttle::ThrottleSpec;
use crate::providers::Part;
use crate::wit::types::Message;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox `{path}`: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("outbox holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error("outbox is unavailable after an earlier failure")]
    Poisoned,
    /// The shared engine cannot be reached: nothing was read or written.
    #[error("shared outbox unavailable: {0}")]
    Unavailable(String),
    #[error("shared outbox: {0}")]
    Postgres(String),
    /// Another host changed what this one was about to write over.
    #[error("outbox conflict: {0}")]
    Conflict(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Queued,
    Sending,
    Delivered,
    Partial,
    Failed,
    Cancelled,
    /// Carried inside another message's request (a merged Tencent
    /// `MsgBody`); it ends with that message.
    Merged,
}

impl MessageState {
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

    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MessageState::Queued | MessageState::Sending | MessageState::Merged
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    Queued,
    Delivered,
    Failed,
}

impl PartState {
    pub(crate) fn as_str(self) -> &'static str {
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
    pub id: String,
    pub plugin: String,
    pub channel: String,
    pub endpoint: String,
    pub message: Message,
    pub state: MessageState,
    pub created_ms: u64,
    pub next_attempt_ms: u64,
    pub attempts: u32,
    pub planned: bool,
    pub last_error: Option<String>,
    pub finished_ms: Option<u64>,
}

/// One part as stored.
#[derive(Debug, Clone)]
pub struct PartRecord {
    pub index: u32,
    pub part: Part,
    pub state: PartState,
    pub provider_ids: Vec<String>,
    pub last_error: Option<String>,
}

/// One plugin's messages waiting on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginBacklog {
    pub plugin: String,
    pub messages: usize,
    /// The provider requests they are expected to take.
    pub requests: usize,
}

/// What `insert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A message with the same idempotency key exists; its id.
    Duplicate(String),
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<MessageState>,
    pub plugin: Option<String>,
    pub channel: Option<String>,
    pub limit: usize,
}

/// What a shared throttle answered a worker asking to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The slot is taken and counted; send now.
    Granted,
    /// No slot yet; ask again after this many milliseconds of throttle time.
    Wait(u64),
    /// This host's claim on the message expired and another host holds it:
    /// leave the message alone.
    LeaseLost,
}

/// A throttle several hosts share: the slot, the send history and the
/// claim on the message are decided together, in the shared engine.
pub trait SharedThrottle: Send + Sync {
    /// Takes a slot of `endpoint` for message `id`, which this host must
    /// still hold, and renews that claim. `now_ms`: the hosts' common
    /// scaled time, or `None` for the engine's own clock.
    fn reserve(
        &self,
        endpoint: &str,
        spec: &ThrottleSpec,
        margin_ms: u64,
        id: &str,
        now_ms: Option<u64>,
    ) -> Result<Reservation, OutboxError>;
    /// How long a claim outlives a host that stopped renewing it.
    fn lease(&self) -> std::time::Duration;
}

/// The outbox seam: SQLite for one host (its throttle lives in the host),
/// PostgreSQL for several (see [`super::postgres`]).
pub trait OutboxStore: Send + Sync {
    /// The throttle this store shares with other hosts, if it is shared.
    /// A shared store's `next_due` claims the message it returns.
    fn shared_throttle(&self) -> Option<&dyn SharedThrottle> {
        None
    }

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
    fn pending_count(&self, endpoint: &str) -> Result<usize, OutboxError>;
    /// The next due message of an endpoint, taking plugins in turn: the
    /// first plugin (by name) after `after_plugin` that has one due.
    fn next_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        after_plugin: Option<&str>,
    ) -> Result<Option<OutboxRecord>, OutboxError>;
    /// When the endpoint's next queued message falls due.
    fn next_due_time(&self, endpoint: &str) -> Result<Option<u64>, OutboxError>;
    fn mark_sending(&self, id: &str) -> Result<(), OutboxError>;
    /// Stores a message's parts, and marks `absorbed` messages as carried
    /// inside them, in one transaction.
    fn save_plan(&self, id: &str, parts: &[Part], absorbed: &[String]) -> Result<(), OutboxError>;
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
    fn parts(&self, id: &str) -> Result<Vec<PartRecord>, OutboxError>;
    fn part_done(
        &self,
        id: &str,
        index: u32,
        state: PartState,
        provider_ids: &[String],
        error: Option<&str>,
    ) -> Result<(), OutboxError>;
    fn requeue(
        &self,
        id: &str,
        next_attempt_ms: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), OutboxError>;
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
    fn record_send(&self, endpoint: &str, at_ms: u64) -> Result<(), OutboxError>;
    fn sends_since(&self, endpoint: &str, since_ms: u64) -> Result<Vec<u64>, OutboxError>;
    fn get(&self, id: &str) -> Result<Option<OutboxRecord>, OutboxError>;
    fn list(&self, filter: &ListFilter) -> Result<Vec<OutboxRecord>, OutboxError>;
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
    fn mark_reported(&self, id: &str) -> Result<(), OutboxError>;
}

pub struct SqliteOutbox {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    channel TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    message TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    planned INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_ms INTEGER,
    reported INTEGER NOT NULL DEFAULT 0,
    merged_into TEXT,
    requests INTEGER NOT NULL DEFAULT 1,
    UNIQUE (plugin, channel, idempotency_key)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (endpoint, state, plugin, next_attempt_ms);
CREATE INDEX IF NOT EXISTS messages_unreported ON messages (reported, state);
CREATE TABLE IF NOT EXISTS parts (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    part TEXT NOT NULL,
    state TEXT NOT NULL,
    provider_ids TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sends (
    endpoint TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_by_endpoint ON sends (endpoint, at_ms);
";

const COLUMNS: &str = "id, plugin, channel, endpoint, message, state, created_ms, next_attempt_ms, attempts, planned, last_error, finished_ms";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxRecord, String>> {
    let message_json: String = row.get(4)?;
    let state: String = row.get(5)?;
    let id: String = row.get(0)?;
    let message = match serde_json::from_str::<Message>(&message_json) {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("message {id}: {e}"))),
    };
    let Some(state) = MessageState::parse(&state) else {
        return Ok(Err(format!("message {id}: unknown state `{state}`")));
    };
    Ok(Ok(OutboxRecord {
        id,
        plugin: row.get(1)?,
        channel: row.get(2)?,
        endpoint: row.get(3)?,
        message,
        state,
        created_ms: row.get::<_, i64>(6)? as u64,
        next_attempt_ms: row.get::<_, i64>(7)? as u64,
        attempts: row.get::<_, i64>(8)? as u32,
        planned: row.get::<_, i64>(9)? != 0,
        last_error: row.get(10)?,
        finished_ms: row.get::<_, Option<i64>>(11)?.map(|v| v as u64),
    }))
}

impl SqliteOutbox {
    pub fn open(path: &Path) -> Result<SqliteOutbox, OutboxError> {
        let open_err = |source| OutboxError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn).map_err(open_err)
    }

    pub fn in_memory() -> Result<SqliteOutbox, OutboxError> {
        Ok(Self::init(Connection::open_in_memory()?)?)
    }

    fn init(conn: Connection) -> Result<SqliteOutbox, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a receipt promises the message is on disk, even across a
        // power loss, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Outboxes written before merging existed lack the column.
        let has_merged_into: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'merged_into'")?
            .exists([])?;
        if !has_merged_into {
            conn.execute_batch("ALTER TABLE messages ADD COLUMN merged_into TEXT")?;
        }
        // Nor did they count requests per message.
        let has_requests: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'requests'")?
            .exists([])?;
        if !has_requests {
            conn.execute_batch(
                "ALTER TABLE messages ADD COLUMN requests INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        Ok(SqliteOutbox {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        let mut conn = self.conn.lock().map_err(|_| OutboxError::Poisoned)?;
        f(&mut conn)
    }

    fn query_records(
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, row_to_record)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.map_err(OutboxError::Corrupt)?);
        }
        Ok(out)
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, OutboxError> {
    serde_json::to_string(value).map_err(|e| OutboxError::Corrupt(e.to_string()))
}

impl OutboxStore for SqliteOutbox {
    fn insert(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.insert_costed(r, 1)
    }

    fn insert_costed(&self, r: &OutboxRecord, requests: u32) -> Result<Inserted, OutboxError> {
        let message = json(&r.message)?;
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(key) = &r.message.idempotency_key {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT id FROM messages WHERE plugin = ?1 AND channel = ?2 AND idempotency_key = ?3",
                        params![r.plugin, r.channel, key],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Inserted::Duplicate(id));
                }
            }
            tx.execute(
                "INSERT INTO messages (id, plugin, channel, endpoint, message, idempotency_key, state, created_ms, next_attempt_ms, requests)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9)",
                params![
                    r.id,
                    r.plugin,
                    r.channel,
                    r.endpoint,
                    message,
                    r.message.idempotency_key,
                    r.created_ms as i64,
                    r.next_attempt_ms as i64,
                    requests.max(1) as i64
                ],
            )?;
            tx.commit()?;
            Ok(Inserted::New)
        })
    }

    fn pending_count(&self, endpoint: &str) -> Result<usize, OutboxError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM messages WHERE endpoint = ?1 AND state IN ('queued', 'sending')",
                params![endpoint],
                |r| r.get::<_, i64>(0),
            )? as usize)
        })
    }

    fn next_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        after_plugin: Option<&str>,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages WHERE endpoint = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 AND plugin > ?3
                 ORDER BY plugin, created_ms, id LIMIT 1"
            );
            let after = after_plugin.unwrap_or("");
            let mut found = Self::query_records(c, &sql, params![endpoint, now_ms as i64, after])?;
            if found.is_empty() && !after.is_empty() {
                found = Self::query_records(c, &sql, params![endpoint, now_ms as i64, ""])?;
            }
            Ok(found.into_iter().next())
        })
    }

    fn next_due_time(&self, endpoint: &str) -> Result<Option<u64>, OutboxError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt_ms) FROM messages WHERE endpoint = ?1 AND state = 'queued'",
                params![endpoint],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(|v| v as u64))
        })
    }

    fn mark_sending(&self, id: &str) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute(
                "UPDATE messages SET state = 'sending' WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
    }

    fn save_plan(&self, id: &str, parts: &[Part], absorbed: &[String]) -> Result<(), OutboxError> {
        let encoded: Vec<String> = parts.iter().map(json).collect::<Result<_, _>>()?;
        self.with(|c| {
            let tx = c.transaction()?;
            for member in absorbed {
                tx.execute(
                    "UPDATE messages SET state = 'merged', merged_into = ?2 WHERE id = ?1 AND state = 'queued'",
                    params![member, id],
                )?;
            }
            tx.execute("DELETE FROM parts WHERE message_id = ?1", params![id])?;
            for (i, part) in encoded.iter().enumerate() {
                tx.execute(
                    "INSERT INTO parts (message_id, idx, part, state) VALUES (?1, ?2, ?3, 'queued')",
                    params![id, i as i64, part],
                )?;
            }
            tx.execute("UPDATE messages SET planned = 1 WHERE id = ?1", params![id])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn mergeable(
        &self,
        endpoint: &str,
        channel: &str,
        now_ms: u64,
        except: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages
                 WHERE endpoint = ?1 AND channel = ?2 AND state = 'queued' AND planned = 0
                   AND next_attempt_ms <= ?3 AND id != ?4
                 ORDER BY created_ms, id LIMIT ?5"
            );
            Self::query_records(
                c,
                &sql,
                params![endpoint, channel, now_ms as i64, except, limit as i64],
            )
        })
    }

    fn members(&self, id: &str) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages WHERE merged_into = ?1 ORDER BY created_ms, id"
            );
            Self::query_records(c, &sql, params![id])
        })
    }

    fn parts(&self, id: &str) -> Result<Vec<PartRecord>, OutboxError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT idx, part, state, provider_ids, last_error FROM parts WHERE message_id = ?1 ORDER BY idx",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (idx, part, state, ids, last_error) = row?;
                let part: Part = serde_json::from_str(&part)
                    .map_err(|e| OutboxError::Corrupt(format!("part {id}/{idx}: {e}")))?;
                out.push(PartRecord {
                    index: idx as u32,
                    part,
                    state: PartState::parse(&state),
                    provider_ids: serde_json::from_str(&ids).unwrap_or_default(),
                    last_error,
                });
            }
            Ok(out)
        })
    }

    fn part_done(
        &self,
        id: &str,
        index: u32,
        state: PartState,
        provider_ids: &[String],
        error: Option<&str>,
    ) -> Result<(), OutboxError> {
        let ids = json(&provider_ids)?;
        self.with(|c| {
            c.execute(
                "UPDATE parts SET state = ?3, provider_ids = ?4, last_error = ?5 WHERE message_id = ?1 AND idx = ?2",
                params![id, index as i64, state.as_str(), ids, error],
            )?;
            Ok(())
        })
    }

    fn requeue(
        &self,
        id: &str,
        next_attempt_ms: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute(
                "UPDATE messages SET state = 'queued', next_attempt_ms = ?2, attempts = ?3, last_error = ?4 WHERE id = ?1",
                params![id, next_attempt_ms as i64, attempts as i64, error],
            )?;
            Ok(())
        })
    }

    fn finish(
        &self,
        id: &str,
        state: MessageState,
        attempts: u32,
        finished_ms: u64,
        error: Option<&str>,
    ) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute(
                "UPDATE messages SET state = ?2, attempts = ?3, finished_ms = ?4, last_error = COALESCE(?5, last_error), reported = 0
                 WHERE id = ?1 OR (merged_into = ?1 AND state = 'merged')",
                params![id, state.as_str(), attempts as i64, finished_ms as i64, error],
            )?;
            Ok(())
        })
    }

    fn recover(&self) -> Result<usize, OutboxError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE messages SET state = 'queued' WHERE state = 'sending'",
                [],
            )?)
        })
    }

    fn record_send(&self, endpoint: &str, at_ms: u64) -> Result<(), OutboxError> {
        self.with(|c| {
            // This write sits just before a provider request, so it skips
            // the fsync: in WAL mode a NORMAL commit still survives a killed
            // process (only a power loss could forget the last sends), which
            // is what daily counters need; messages stay FULL.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            let inserted = c.execute(
                "INSERT INTO sends (endpoint, at_ms) VALUES (?1, ?2)",
                params![endpoint, at_ms as i64],
            );
            c.pragma_update(None, "synchronous", "FULL")?;
            inserted?;
            Ok(())
        })
    }

    fn sends_since(&self, endpoint: &str, since_ms: u64) -> Result<Vec<u64>, OutboxError> {
        self.with(|c| {
            // History older than any window is useless; drop it here.
            c.execute(
                "DELETE FROM sends WHERE endpoint = ?1 AND at_ms < ?2",
                params![endpoint, since_ms as i64],
            )?;
            let mut stmt =
                c.prepare_cached("SELECT at_ms FROM sends WHERE endpoint = ?1 ORDER BY at_ms")?;
            let rows = stmt.query_map(params![endpoint], |r| r.get::<_, i64>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r? as u64);
            }
            Ok(out)
        })
    }

    fn get(&self, id: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!("SELECT {COLUMNS} FROM messages WHERE id = ?1");
            Ok(Self::query_records(c, &sql, params![id])?
                .into_iter()
                .next())
        })
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR channel = ?3)
                 ORDER BY created_ms DESC, id DESC LIMIT ?4"
            );
            Self::query_records(
                c,
                &sql,
                params![
                    f.state.map(MessageState::as_str),
                    f.plugin,
                    f.channel,
                    f.limit.max(1) as i64
                ],
            )
        })
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE messages SET state = 'cancelled', finished_ms = ?2, reported = 0
                 WHERE (id = ?1 AND state = 'queued') OR (merged_into = ?1 AND state = 'merged')",
                params![id, now_ms as i64],
            )? >= 1)
        })
    }

    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE messages SET state = 'queued', next_attempt_ms = ?2, attempts = 0, finished_ms = NULL, reported = 0
                 WHERE id = ?1 AND state IN ('failed', 'partial', 'cancelled')",
                params![id, now_ms as i64],
            )?;
            // Delivered parts stay delivered; the rest get another go.
            tx.execute(
                "UPDATE parts SET state = 'queued' WHERE message_id = ?1 AND state = 'failed'",
                params![id],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn unreported(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages WHERE reported = 0 AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                 ORDER BY finished_ms LIMIT ?1"
            );
            Self::query_records(c, &sql, params![limit as i64])
        })
    }

    fn unreported_plugins(&self, limit: usize) -> Result<Vec<String>, OutboxError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT plugin FROM messages WHERE reported = 0 AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                 ORDER BY plugin LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn unreported_of(&self, plugin: &str, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM messages WHERE reported = 0 AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                   AND plugin = ?1
                 ORDER BY finished_ms, id LIMIT ?2"
            );
            Self::query_records(c, &sql, params![plugin, limit as i64])
        })
    }

    fn pending_by_plugin(&self, endpoint: &str) -> Result<Vec<PluginBacklog>, OutboxError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT plugin, COUNT(*), SUM(requests) FROM messages WHERE endpoint = ?1 AND state IN ('queued', 'sending')
                 GROUP BY plugin",
            )?;
            let rows = stmt.query_map(params![endpoint], |r| {
                Ok(PluginBacklog {
                    plugin: r.get(0)?,
                    messages: r.get::<_, i64>(1)?.max(0) as usize,
                    requests: r.get::<_, i64>(2)?.max(0) as usize,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn mark_reported(&self, id: &str) -> Result<(), OutboxError> {
        self.with(|c| {
            c.execute(
                "UPDATE messages SET reported = 1 WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::types::Content;

    fn record(id: &str, plugin: &str, created: u64, key: Option<&str>) -> OutboxRecord {
        OutboxRecord {
            id: id.into(),
            plugin: plugin.into(),
            channel: "lobby".into(),
            endpoint: "p/default".into(),
            message: Message {
                channel: "lobby".into(),
                content: Content::Text(format!("from {plugin}")),
                sender: None,
                extra: None,
                idempotency_key: key.map(str::to_string),
                reply_to: None,
                options: None,
            },
            state: MessageState::Queued,
            created_ms: created,
            next_attempt_ms: created,
            attempts: 0,
            planned: false,
            last_error: None,
            finished_ms: None,
        }
    }

    #[test]
    fn survives_reopen_and_recovers_sending_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let o = SqliteOutbox::open(&path).unwrap();
            o.insert(&record("a", "p1", 1, None)).unwrap();
            o.insert(&record("b", "p1", 2, None)).unwrap();
            o.mark_sending("a").unwrap();
            o.record_send("p/default", 10).unwrap();
        }
        let o = SqliteOutbox::open(&path).unwrap();
        assert_eq!(o.get("a").unwrap().unwrap().state, MessageState::Sending);
        assert_eq!(o.recover().unwrap(), 1);
        assert_eq!(o.pending_count("p/default").unwrap(), 2);
        assert_eq!(o.sends_since("p/default", 0).unwrap(), vec![10]);
    }

    #[test]
    fn idempotency_keys_return_the_first_receipt() {
        let o = SqliteOutbox::in_memory().unwrap();
        assert_eq!(
            o.insert(&record("a", "p1", 1, Some("k"))).unwrap(),
            Inserted::New
        );
        assert_eq!(
            o.insert(&record("b", "p1", 2, Some("k"))).unwrap(),
            Inserted::Duplicate("a".into())
        );
        // Another plugin's key is its own.
        assert_eq!(
            o.insert(&record("c", "p2", 3, Some("k"))).unwrap(),
            Inserted::New
        );
    }

    #[test]
    fn plugins_take_turns() {
        let o = SqliteOutbox::in_memory().unwrap();
        for i in 0..3 {
            o.insert(&record(&format!("a{i}"), "alpha", i, None))
                .unwrap();
        }
        o.insert(&record("b0", "beta", 10, None)).unwrap();
        let mut order = Vec::new();
        let mut last: Option<String> = None;
        for _ in 0..4 {
            let r = o
                .next_due("p/default", 100, last.as_deref())
                .unwrap()
                .unwrap();
            o.finish(&r.id, MessageState::Delivered, 1, 100, None)
                .unwrap();
            last = Some(r.plugin.clone());
            order.push(r.id);
        }
        // alpha's backlog does not make beta wait behind all of it.
        assert_eq!(order, vec!["a0", "b0", "a1", "a2"]);
    }

    #[test]
    fn plans_retries_and_cancels() {
        let o = SqliteOutbox::in_memory().unwrap();
        o.insert(&record("a", "p1", 1, None)).unwrap();
        let part = Part {
            target: "m1".into(),
            message: record("a", "p1", 1, None).message,
            dedup_key: Some("42".into()),
            merged: Vec::new(),
        };
        o.save_plan("a", &[part.clone(), part], &[]).unwrap();
        o.part_done("a", 0, PartState::Delivered, &["id-1".into()], None)
            .unwrap();
        o.part_done("a", 1, PartState::Failed, &[], Some("meetingNotFound"))
            .unwrap();
        o.finish(
            "a",
            MessageState::Partial,
            2,
            5,
            Some("m1: meetingNotFound"),
        )
        .unwrap();
        assert_eq!(o.unreported(10).unwrap().len(), 1);
        o.mark_reported("a").unwrap();
        assert!(o.unreported(10).unwrap().is_empty());
        assert!(o.retry("a", 6).unwrap());
        let parts = o.parts("a").unwrap();
        assert_eq!(parts[0].state, PartState::Delivered);
        assert_eq!(parts[0].provider_ids, vec!["id-1".to_string()]);
        assert_eq!(parts[1].state, PartState::Queued);
        assert_eq!(parts[1].part.dedup_key.as_deref(), Some("42"));
        assert!(o.cancel("a", 7).unwrap());
        assert!(!o.cancel("a", 8).unwrap());
        assert_eq!(o.get("a").unwrap().unwrap().state, MessageState::Cancelled);
    }
}
