//! The outbox and the throttles' history in one SQLite file, for a host on
//! its own (see [`super`] for what both backends share).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::batch::{Answer, GroupCommit, NewRow};
use super::{
    COLUMNS, Columns, Dialect, Inserted, LISTED_COLUMNS, ListFilter, ListedMessage, MessageState,
    OutboxError, OutboxRecord, OutboxStore, PART_COLUMNS, PART_FORMAT, PROGRESS_COLUMNS,
    PartRecord, PartState, PluginBacklog, SendLog, attach_parts, decode_parts, encode_part,
    is_current, json, listed_from, member_taken, parse_message, part_row, progress_row,
    record_from, reencode_part, schema,
};
use crate::providers::Part;
use crate::wit::types::Message;

/// The outbox in one SQLite file (`outbox.sqlite` in `storage.dir`).
pub struct SqliteOutbox {
    conn: Mutex<Connection>,
    /// A second connection to the same file, for the reads on the accept
    /// path and the admin API's read-back (see [`SqliteOutbox::read`]);
    /// none in memory, where a second connection would be another database.
    reader: Option<Mutex<Connection>>,
    /// Concurrent accepts, committed together (see [`super::batch`]).
    accepts: GroupCommit,
}

/// SQLite's spelling of the shared tables.
const DIALECT: Dialect = Dialect {
    prefix: "",
    ms: "INTEGER",
    flag: "INTEGER",
    no: "0",
    message_columns: "",
    parts_options: " WITHOUT ROWID",
};

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, OutboxError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, OutboxError> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, OutboxError> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, OutboxError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, OutboxError> {
        Ok(self.get::<_, i64>(i)? != 0)
    }
}

/// How many prepared statements a connection keeps (see `init`).
const STATEMENT_CACHE: usize = 64;

/// Every accept asks its endpoint's backlog by plugin
/// ([`OutboxStore::pending_by_plugin`]). Counting it from `messages` reads
/// every waiting message, each time: a profile of `botbox run` taking
/// broadcasts over the admin API spent two thirds of the host's CPU there
/// once the backlog was a few thousand deep, so the worker fell behind and
/// accepts were refused. `backlog` keeps the count instead, kept by
/// triggers in the same transaction as every change to a message (insert,
/// state, cost, delete), so it is exactly what the query would count; it
/// is counted afresh from `messages` at every open.
const BACKLOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS backlog (
    endpoint TEXT NOT NULL,
    plugin TEXT NOT NULL,
    messages INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (endpoint, plugin)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS backlog_insert AFTER INSERT ON messages
WHEN NEW.state IN ('queued', 'sending') BEGIN
    INSERT INTO backlog (endpoint, plugin, messages, requests)
    VALUES (NEW.endpoint, NEW.plugin, 1, NEW.requests)
    ON CONFLICT (endpoint, plugin) DO UPDATE
    SET messages = messages + 1, requests = requests + excluded.requests;
END;
CREATE TRIGGER IF NOT EXISTS backlog_delete AFTER DELETE ON messages
WHEN OLD.state IN ('queued', 'sending') BEGIN
    UPDATE backlog SET messages = messages - 1, requests = requests - OLD.requests
    WHERE endpoint = OLD.endpoint AND plugin = OLD.plugin;
END;
CREATE TRIGGER IF NOT EXISTS backlog_update AFTER UPDATE OF state, requests, endpoint, plugin ON messages
WHEN OLD.state IN ('queued', 'sending') OR NEW.state IN ('queued', 'sending') BEGIN
    UPDATE backlog SET messages = messages - 1, requests = requests - OLD.requests
    WHERE OLD.state IN ('queued', 'sending') AND endpoint = OLD.endpoint AND plugin = OLD.plugin;
    INSERT INTO backlog (endpoint, plugin, messages, requests)
    SELECT NEW.endpoint, NEW.plugin, 1, NEW.requests WHERE NEW.state IN ('queued', 'sending')
    ON CONFLICT (endpoint, plugin) DO UPDATE
    SET messages = messages + 1, requests = requests + excluded.requests;
END;
BEGIN;
DELETE FROM backlog;
INSERT INTO backlog (endpoint, plugin, messages, requests)
SELECT endpoint, plugin, COUNT(*), SUM(requests) FROM messages
WHERE state IN ('queued', 'sending') GROUP BY endpoint, plugin;
COMMIT;
";

impl SqliteOutbox {
    /// Opens (creating it if missing) the outbox file at `path`.
    pub fn open(path: &Path) -> Result<SqliteOutbox, OutboxError> {
        let open_err = |source| OutboxError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = crate::storage::open_sqlite(path).map_err(open_err)?;
        let mut outbox = Self::init(conn).map_err(open_err)?;
        let reader = crate::storage::open_sqlite(path).map_err(open_err)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_err)?;
        outbox.reader = Some(Mutex::new(reader));
        Ok(outbox)
    }

    /// An outbox that lives in memory, for tests.
    pub fn in_memory() -> Result<SqliteOutbox, OutboxError> {
        let conn = crate::storage::configure_sqlite(Connection::open_in_memory()?)?;
        Ok(Self::init(conn)?)
    }

    fn init(mut conn: Connection) -> Result<SqliteOutbox, rusqlite::Error> {
        // Room for every statement the outbox prepares, so the worker's and
        // the accepts' statements do not push each other out of rusqlite's
        // cache (16 by default) and get compiled again.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(&schema(&DIALECT))?;
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
        // Nor did they count delivery attempts, or requests per part.
        for (table, column) in [("messages", "delivery_attempts"), ("parts", "requests")] {
            let has: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
                ))?
                .exists([])?;
            if !has {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                ))?;
            }
        }
        // Nor did they keep the trace a message was accepted in.
        let has_traceparent: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'traceparent'")?
            .exists([])?;
        if !has_traceparent {
            conn.execute_batch("ALTER TABLE messages ADD COLUMN traceparent TEXT")?;
        }
        // The merged_into index comes after the column it needs.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_merged ON messages (merged_into) WHERE merged_into IS NOT NULL",
        )?;
        // Every claim reads each plugin's oldest due messages from these
        // columns only (`claim_due`), and the listing counts by them:
        // with the index covering them neither reads a message's row.
        // After `requests`, which older files gain above.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_backlog ON messages
                 (endpoint, state, plugin, created_ms, id, next_attempt_ms, requests)",
        )?;
        // A worker looking for queued messages to carry in one request
        // (`mergeable`) reads them oldest first up to its limit; this index
        // hands them over in that order instead of every queued message
        // of the endpoint being read and sorted.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_mergeable ON messages
                 (endpoint, channel, state, planned, created_ms, id)",
        )?;
        conn.execute_batch(BACKLOG_SCHEMA)?;
        Self::migrate_parts(&mut conn)?;
        Ok(SqliteOutbox {
            conn: Mutex::new(conn),
            reader: None,
            accepts: GroupCommit::default(),
        })
    }

    /// Outboxes written before [`PART_FORMAT`] stored a whole copy of the
    /// message in every part: rewrites those parts in the current format,
    /// in one transaction, once (`user_version` records it).
    fn migrate_parts(conn: &mut Connection) -> Result<(), rusqlite::Error> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version >= i64::from(PART_FORMAT) {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows: Vec<(String, i64, String, String)> = tx
            .prepare(
                "SELECT p.message_id, p.idx, p.part, m.message FROM parts p JOIN messages m ON m.id = p.message_id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut rewritten = 0usize;
        for (id, idx, stored, owner) in rows {
            if is_current(&stored) {
                continue;
            }
            let members: Vec<(String, String)> = tx
                .prepare_cached("SELECT id, message FROM messages WHERE merged_into = ?1")?
                .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            match reencode_part(&id, idx, &stored, &owner, &members) {
                Ok(encoded) => {
                    tx.execute(
                        "UPDATE parts SET part = ?3 WHERE message_id = ?1 AND idx = ?2",
                        params![id, idx, encoded],
                    )?;
                    rewritten += 1;
                }
                // Left as it is: reading it reports the same problem.
                Err(e) => tracing::warn!("outbox part {id}/{idx} kept in the old format: {e}"),
            }
        }
        tx.pragma_update(None, "user_version", i64::from(PART_FORMAT))?;
        tx.commit()?;
        if rewritten > 0 {
            tracing::info!(
                parts = rewritten,
                "outbox migrated: parts no longer copy their message"
            );
        }
        Ok(())
    }

    /// Stores `r` in a transaction of its own, with its own fsync: what
    /// every accept did before group commit, kept as the benchmark's
    /// reference and as the way a failed batch finds its one bad row.
    pub fn insert_alone(&self, r: &OutboxRecord, requests: u32) -> Result<Inserted, OutboxError> {
        let row = NewRow::of(r, requests)?;
        self.insert_rows(std::slice::from_ref(&row))?
            .pop()
            .ok_or(OutboxError::Poisoned)
    }

    /// Stores `records` (each with the provider requests it is expected to
    /// take) together, as one batch of the group commit does: one
    /// transaction for all, and when that fails, one each, so a bad record
    /// fails only its own answer. Answers each record, in order.
    pub fn insert_batch(
        &self,
        records: &[(&OutboxRecord, u32)],
    ) -> Vec<Result<Inserted, OutboxError>> {
        super::batch::answer_each(records, |rows| self.commit_batch(rows))
    }

    /// Inserts `rows` in one transaction; any failure rolls all of them
    /// back.
    fn insert_rows(&self, rows: &[NewRow]) -> Result<Vec<Inserted>, OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(Self::insert_row(&tx, row)?);
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// One batch of the group commit: one transaction for all of `rows`.
    /// When the file refuses the transaction (busy past the timeout, full,
    /// read-only, an I/O error), every caller hears that error at once:
    /// trying each row again would make the last caller wait out the busy
    /// timeout once per row. When a row is refused (a constraint), each row
    /// is tried again in a transaction of its own, so only the caller
    /// whose row is bad hears an error.
    fn commit_batch(&self, rows: Vec<NewRow>) -> Vec<Answer> {
        match self.insert_rows(&rows) {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) if rows.len() == 1 => vec![Err(e)],
            Err(OutboxError::Sqlite(rusqlite::Error::SqliteFailure(code, text)))
                if code.code != rusqlite::ErrorCode::ConstraintViolation =>
            {
                rows.iter()
                    .map(|_| {
                        Err(OutboxError::Sqlite(rusqlite::Error::SqliteFailure(
                            code,
                            text.clone(),
                        )))
                    })
                    .collect()
            }
            Err(_) => rows
                .iter()
                .map(|row| {
                    self.insert_rows(std::slice::from_ref(row))?
                        .pop()
                        .ok_or(OutboxError::Poisoned)
                })
                .collect(),
        }
    }

    /// Inserts one row unless its idempotency key is taken, inside the
    /// caller's transaction (so a later row of the same batch sees it).
    fn insert_row(tx: &Connection, r: &NewRow) -> Result<Inserted, OutboxError> {
        if let Some(key) = &r.idempotency_key {
            let existing: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM messages WHERE plugin = ?1 AND channel = ?2 AND idempotency_key = ?3",
                )?
                .query_row(params![r.plugin, r.channel, key], |row| row.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Ok(Inserted::Duplicate(id));
            }
        }
        tx.prepare_cached(
            "INSERT INTO messages (id, plugin, channel, endpoint, message, idempotency_key, state, created_ms, next_attempt_ms, requests, traceparent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            r.id,
            r.plugin,
            r.channel,
            r.endpoint,
            r.message,
            r.idempotency_key,
            r.created_ms,
            r.next_attempt_ms,
            i64::from(r.requests),
            r.traceparent
        ])?;
        Ok(Inserted::New)
    }

    /// Runs `f` on the reading connection. In WAL mode it reads the last
    /// commit without waiting for the write in progress on the writing
    /// connection, fsync included: an accept's backlog count and the admin
    /// API's read-back of a receipt do not queue behind other accepts'
    /// commits or the delivery worker's writes.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        match &self.reader {
            Some(reader) => f(&*reader.lock().map_err(|_| OutboxError::Poisoned)?),
            None => self.with(|c| f(c)),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        let mut conn = self.conn.lock().map_err(|_| OutboxError::Poisoned)?;
        f(&mut conn)
    }

    /// Stores message `id`'s parts and marks `absorbed` as carried inside
    /// them, within the caller's transaction; fails, leaving the caller to
    /// roll back, when a message to carry was taken meanwhile.
    fn write_plan(
        tx: &Connection,
        id: &str,
        parts: &[Part],
        absorbed: &[String],
    ) -> Result<(), OutboxError> {
        let owner = Self::message_of(tx, id)?
            .ok_or_else(|| OutboxError::Corrupt(format!("message {id} is not in the outbox")))?;
        let mut members = Vec::with_capacity(absorbed.len());
        for member in absorbed {
            let taken = tx
                .prepare_cached(
                    "UPDATE messages SET state = 'merged', merged_into = ?2 WHERE id = ?1 AND state = 'queued'",
                )?
                .execute(params![member, id])?;
            if taken == 0 {
                return Err(member_taken(member, id));
            }
            if let Some(message) = Self::message_of(tx, member)? {
                members.push((member.clone(), message));
            }
        }
        tx.prepare_cached("DELETE FROM parts WHERE message_id = ?1")?
            .execute(params![id])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO parts (message_id, idx, part, state) VALUES (?1, ?2, ?3, 'queued')",
        )?;
        for (i, part) in parts.iter().enumerate() {
            insert.execute(params![id, i as i64, encode_part(&owner, &members, part)?])?;
        }
        tx.prepare_cached("UPDATE messages SET planned = 1 WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }

    /// The stored body of message `id`.
    fn message_of(conn: &Connection, id: &str) -> Result<Option<Message>, OutboxError> {
        let text: Option<String> = conn
            .prepare_cached("SELECT message FROM messages WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        text.map(|t| parse_message(id, &t)).transpose()
    }

    fn query_records(
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(record_from(row)?);
        }
        Ok(out)
    }
}

impl OutboxStore for SqliteOutbox {
    fn insert(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.insert_costed(r, 1)
    }

    fn insert_costed(&self, r: &OutboxRecord, requests: u32) -> Result<Inserted, OutboxError> {
        let row = NewRow::of(r, requests)?;
        self.accepts.insert(row, |rows| self.commit_batch(rows))
    }

    fn pending_count(&self, endpoint: &str) -> Result<usize, OutboxError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(messages), 0) FROM backlog WHERE endpoint = ?1",
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
                "UPDATE messages SET state = 'sending', delivery_attempts = delivery_attempts + 1 WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
    }

    fn save_plan(&self, id: &str, parts: &[Part], absorbed: &[String]) -> Result<(), OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            // Dropping the transaction on an error rolls it back.
            Self::write_plan(&tx, id, parts, absorbed)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn save_plans(&self, plans: &[super::Plan]) -> Vec<Result<(), OutboxError>> {
        let saved = self.with(|c| {
            // One transaction, so one fsync for all; each plan in a
            // savepoint of its own, so a refused one leaves no trace and
            // the others still commit.
            let mut tx = c.transaction()?;
            let mut answers = Vec::with_capacity(plans.len());
            for plan in plans {
                let sp = tx.savepoint()?;
                let written = Self::write_plan(&sp, &plan.id, &plan.parts, &plan.absorbed);
                if written.is_ok() {
                    sp.commit()?;
                }
                // A savepoint dropped uncommitted rolls back to its start.
                answers.push(written);
            }
            tx.commit()?;
            Ok(answers)
        });
        super::plan_answers(saved, plans.len())
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
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PART_COLUMNS} FROM parts WHERE message_id = ?1 ORDER BY idx"
            ))?;
            let mut rows = stmt.query(params![id])?;
            let mut parts = Vec::new();
            while let Some(row) = rows.next()? {
                parts.push(part_row(row)?);
            }
            if parts.is_empty() {
                return Ok(Vec::new());
            }
            let owner: Option<String> = c
                .prepare_cached("SELECT message FROM messages WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            // A part names the messages merged into it; they are these.
            let members: Vec<(String, String)> = c
                .prepare_cached("SELECT id, message FROM messages WHERE merged_into = ?1")?
                .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            decode_parts(id, parts, owner, members)
        })
    }

    fn part_requested(&self, id: &str, index: u32) -> Result<(), OutboxError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE parts SET requests = requests + 1 WHERE message_id = ?1 AND idx = ?2",
            )?
            .execute(params![id, index as i64])?;
            Ok(())
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

    fn get(&self, id: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        self.read(|c| {
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

    fn list_progress(&self, f: &ListFilter) -> Result<Vec<ListedMessage>, OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut listed = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {COLUMNS}, {LISTED_COLUMNS} FROM messages
                     WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR channel = ?3)
                     ORDER BY created_ms DESC, id DESC LIMIT ?4"
                ))?;
                let mut rows = stmt.query(params![
                    f.state.map(MessageState::as_str),
                    f.plugin,
                    f.channel,
                    f.limit.max(1) as i64
                ])?;
                while let Some(row) = rows.next()? {
                    listed.push(listed_from(row)?);
                }
            }
            let mut parts = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {PROGRESS_COLUMNS} FROM parts WHERE message_id = ?1 ORDER BY idx"
                ))?;
                for m in &listed {
                    let mut rows = stmt.query(params![m.record.id])?;
                    while let Some(row) = rows.next()? {
                        parts.push(progress_row(row)?);
                    }
                }
            }
            tx.commit()?;
            attach_parts(&mut listed, parts);
            Ok(listed)
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
        self.read(|c| {
            // Kept by triggers (`BACKLOG_SCHEMA`).
            let mut stmt = c.prepare_cached(
                "SELECT plugin, messages, requests FROM backlog WHERE endpoint = ?1 AND messages > 0
                 ORDER BY plugin",
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
        // Not synced: a report is handed over before it is marked, so a
        // crash in between hands it over again at the restart anyway; a
        // power cut could only widen that to the reports marked since the
        // last synced commit (an accept, an end). It ran once a message,
        // each an fsync.
        self.with(|c| {
            unsynced(c, |c| {
                c.prepare_cached("UPDATE messages SET reported = 1 WHERE id = ?1")?
                    .execute(params![id])?;
                Ok(())
            })
        })
    }

    fn claim_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        limit: usize,
        after_plugin: Option<&str>,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A claim is not synced to disk: what a power loss could forget is
        // that the messages were being sent, and a restart's `recover`
        // puts messages left sending back in the queue anyway. Whatever
        // is written next with an fsync (a plan, before any request;
        // an end) syncs the claim's pages with it.
        self.with(|c| {
            unsynced(c, |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // No batch takes more than `limit` of one plugin's messages,
                // so each plugin with messages waiting (the kept backlog)
                // offers its `limit` oldest due ones, read in the order of
                // the `messages_backlog` index, which covers them. Ranking
                // every waiting message instead (`claim::ranked_due`, as
                // PostgreSQL does) cost each claim time in proportion to
                // the backlog.
                let mut due: Vec<Due> = Vec::new();
                {
                    let plugins: Vec<String> = tx
                        .prepare_cached(
                            "SELECT plugin FROM backlog WHERE endpoint = ?1 AND messages > 0",
                        )?
                        .query_map(params![endpoint], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    let mut oldest = tx.prepare_cached(
                        "SELECT id, created_ms FROM messages
                         WHERE endpoint = ?1 AND state = 'queued' AND plugin = ?2 AND next_attempt_ms <= ?3
                         ORDER BY created_ms, id LIMIT ?4",
                    )?;
                    for plugin in plugins {
                        let rows = oldest.query_map(
                            params![endpoint, plugin, now_ms as i64, limit as i64],
                            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                        )?;
                        for row in rows {
                            let (id, created_ms) = row?;
                            due.push(Due {
                                id,
                                plugin: plugin.clone(),
                                created_ms: u64::try_from(created_ms).unwrap_or(0),
                            });
                        }
                    }
                }
                let mut picked = super::claim::in_turns(due, after_plugin);
                picked.truncate(limit);
                if picked.is_empty() {
                    // Nothing written: nothing to sync.
                    tx.rollback()?;
                    return Ok(Vec::new());
                }
                let mut claimed = Vec::with_capacity(picked.len());
                {
                    let read = format!("SELECT {COLUMNS} FROM messages WHERE id = ?1");
                    let mut mark = tx.prepare_cached(
                        "UPDATE messages SET state = 'sending', delivery_attempts = delivery_attempts + 1 WHERE id = ?1",
                    )?;
                    for d in picked {
                        let mut record = Self::query_records(&tx, &read, params![d.id])?
                            .pop()
                            .ok_or_else(|| {
                                OutboxError::Corrupt(format!("message {} vanished", d.id))
                            })?;
                        mark.execute(params![d.id])?;
                        record.state = MessageState::Sending;
                        claimed.push(record);
                    }
                }
                tx.commit()?;
                Ok(claimed)
            })
        })
    }

    fn delivered(&self, done: &[super::Delivered]) -> Result<(), OutboxError> {
        if done.is_empty() {
            return Ok(());
        }
        let ids = done
            .iter()
            .map(|d| json(&d.provider_ids))
            .collect::<Result<Vec<_>, _>>()?;
        self.with(|c| {
            // One transaction for every message that ended meanwhile.
            let tx = c.transaction()?;
            {
                let mut part = tx.prepare_cached(
                    "UPDATE parts SET requests = requests + 1, state = 'delivered', provider_ids = ?3, last_error = NULL
                     WHERE message_id = ?1 AND idx = ?2",
                )?;
                let mut message = tx.prepare_cached(
                    "UPDATE messages SET state = 'delivered', attempts = ?2, finished_ms = ?3, reported = 0
                     WHERE id = ?1 OR (merged_into = ?1 AND state = 'merged')",
                )?;
                for (d, provider_ids) in done.iter().zip(&ids) {
                    part.execute(params![d.id, d.index as i64, provider_ids])?;
                    message.execute(params![d.id, d.attempts as i64, d.finished_ms as i64])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn prune(&self, before_ms: u64, limit: usize) -> Result<usize, OutboxError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM messages AS m
                     WHERE finished_ms < ?1 AND merged_into IS NULL AND reported = 1
                       AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                       AND NOT EXISTS (SELECT 1 FROM messages AS c WHERE c.merged_into = m.id AND c.reported = 0)
                     ORDER BY finished_ms LIMIT ?2",
                )?
                .query_map(params![before_ms as i64, limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                tx.execute("DELETE FROM parts WHERE message_id = ?1", params![id])?;
                tx.execute("DELETE FROM messages WHERE merged_into = ?1", params![id])?;
                tx.execute("DELETE FROM messages WHERE id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(ids.len())
        })
    }

    /// Takes and gives back the write lock (a file another process holds
    /// locked, or one opened read-only, fails here), then writes, syncs
    /// and removes a small file beside the database: SQLite creates its
    /// journal and WAL files there and a restart reopens them there, so a
    /// folder that refuses a new file, or a disk that refuses its bytes,
    /// is not ready even while the open connection still writes.
    fn ready(&self) -> Result<(), super::NotReady> {
        let path = self
            .with(|c| {
                c.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
                Ok(c.path().filter(|p| !p.is_empty()).map(PathBuf::from))
            })
            .map_err(|e| super::NotReady::NotWritable(e.to_string()))?;
        match path {
            Some(path) => probe_beside(&path),
            // In memory: there is no folder to write to.
            None => Ok(()),
        }
    }
}

/// A due message as a claim first reads it: enough to take turns by.
struct Due {
    id: String,
    plugin: String,
    created_ms: u64,
}

impl super::claim::Turn for Due {
    fn plugin(&self) -> &str {
        &self.plugin
    }
    fn age(&self) -> (u64, &str) {
        (self.created_ms, &self.id)
    }
}

/// Runs `write` with its commits not synced to disk (`synchronous=NORMAL`),
/// then puts the connection back to syncing every commit (`FULL`), which
/// accepts and ends rely on, whether `write` succeeded or not.
///
/// In WAL mode a NORMAL commit survives a killed process and keeps the
/// file consistent; only a power loss or an OS crash can roll it back
/// (<https://www.sqlite.org/pragma.html#pragma_synchronous>). The next
/// FULL commit syncs the WAL file, so its pages with it. So only writes
/// whose loss on a power cut changes nothing a restart would not redo go
/// here.
fn unsynced<T>(
    c: &mut Connection,
    write: impl FnOnce(&mut Connection) -> Result<T, OutboxError>,
) -> Result<T, OutboxError> {
    // Cached: this runs twice for every message sent.
    c.prepare_cached("PRAGMA synchronous = NORMAL")?
        .execute([])?;
    let written = write(c);
    let restored = c
        .prepare_cached("PRAGMA synchronous = FULL")
        .and_then(|mut s| s.execute([]));
    let written = written?;
    restored?;
    Ok(written)
}

/// Writes, syncs and removes a file of its own beside `database`.
fn probe_beside(database: &Path) -> Result<(), super::NotReady> {
    use std::io::Write;
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name of its own per probe, so probes never remove each other's.
    let probe = database.with_file_name(format!("{name}.ready-{:016x}", rand::random::<u64>()));
    let written = std::fs::File::create_new(&probe).and_then(|mut f| {
        f.write_all(b"ready")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written.and(removed).map_err(|e| {
        let folder = database.parent().unwrap_or(Path::new("."));
        super::NotReady::NotWritable(format!(
            "cannot write a file in `{}` ({e}); the outbox needs that folder writable",
            folder.display()
        ))
    })
}

impl SendLog for SqliteOutbox {
    fn record_send(&self, endpoint: &str, at_ms: u64) -> Result<(), OutboxError> {
        self.with(|c| {
            // This write sits just before a provider request, so it skips
            // the fsync (only a power loss could forget the last sends),
            // which is what daily counters need.
            unsynced(c, |c| {
                c.prepare_cached("INSERT INTO sends (endpoint, at_ms) VALUES (?1, ?2)")?
                    .execute(params![endpoint, at_ms as i64])?;
                Ok(())
            })
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

    fn forget_before(&self, before_ms: u64) -> Result<usize, OutboxError> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM sends WHERE at_ms < ?1",
                params![before_ms as i64],
            )?)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::delivery::store::PRUNE_BATCH;
    use crate::wit::types::{Content, MessageOptions};

    /// A message at the caps a plugin may fill: 64 KiB of `extra`, three
    /// 30 KiB options and a text long enough to be split.
    pub(crate) fn heavy(channel: &str, text: &str) -> Message {
        Message {
            channel: channel.into(),
            content: Content::Text(text.into()),
            sender: Some("bot".into()),
            extra: Some(format!("{{\"x\":\"{}\"}}", "e".repeat(64 * 1024 - 10))),
            idempotency_key: None,
            reply_to: None,
            options: Some(MessageOptions {
                system: false,
                url_preview: None,
                attach: Some("a".repeat(30 * 1024)),
                keyboard: Some("k".repeat(30 * 1024)),
                menu: Some("m".repeat(30 * 1024)),
                priority: None,
            }),
        }
    }

    /// Five meetings' parts of `message` and one text slice, as a provider
    /// plans them: each carries a whole copy of the message.
    pub(crate) fn meeting_parts(message: &Message) -> Vec<Part> {
        let mut parts: Vec<Part> = (0..5)
            .map(|i| Part {
                target: format!("meeting-{i}"),
                message: message.clone(),
                dedup_key: Some(format!("{i}")),
                merged: Vec::new(),
            })
            .collect();
        let mut slice = message.clone();
        slice.content = Content::Text("the second half".into());
        parts.push(Part {
            target: "meeting-0".into(),
            message: slice,
            dedup_key: None,
            merged: Vec::new(),
        });
        parts
    }

    fn part_bytes(path: &Path) -> (i64, i64) {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(part)), 0) FROM parts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    fn synchronous(o: &SqliteOutbox) -> i64 {
        o.with(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn claims_and_report_marks_skip_the_fsync_and_leave_every_later_commit_synced() {
        // 1 = NORMAL (no fsync at commit), 2 = FULL.
        let dir = tempfile::tempdir().unwrap();
        let o = SqliteOutbox::open(&dir.path().join("outbox.sqlite")).unwrap();
        assert_eq!(synchronous(&o), 2);
        let during = o
            .with(|c| {
                unsynced(c, |c| {
                    Ok(c.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?)
                })
            })
            .unwrap();
        assert_eq!(during, 1);
        // A write that fails puts it back too.
        let failed: Result<(), OutboxError> = o.with(|c| {
            unsynced(
                c,
                |c| Ok(c.execute_batch("INSERT INTO nowhere VALUES (1)")?),
            )
        });
        assert!(failed.is_err());
        assert_eq!(synchronous(&o), 2);
        // A claim that finds nothing, one that takes a message, and a
        // send counted for the daily limits: accepts after them still sync.
        assert!(o.claim_due("p/default", 10, 4, None).unwrap().is_empty());
        assert_eq!(synchronous(&o), 2);
        o.insert(&record("a", "p1", 1, None)).unwrap();
        assert_eq!(o.claim_due("p/default", 10, 4, None).unwrap().len(), 1);
        assert_eq!(synchronous(&o), 2);
        o.record_send("p/default", 10).unwrap();
        assert_eq!(synchronous(&o), 2);
        o.mark_reported("a").unwrap();
        assert_eq!(synchronous(&o), 2);
    }

    #[test]
    fn a_message_with_many_parts_stores_its_body_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let o = SqliteOutbox::open(&path).unwrap();
        let mut a = record("a", "p1", 1, None);
        a.message = heavy("lobby", "the first half the second half");
        o.insert(&a).unwrap();
        let parts = meeting_parts(&a.message);
        o.save_plan("a", &parts, &[]).unwrap();
        let (rows, bytes) = part_bytes(&path);
        assert_eq!(rows, 6);
        // Six parts of a 154 KiB message: targets, dedup keys and one slice.
        assert!(bytes < 1024, "parts hold {bytes} bytes");
        let body: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT SUM(length(message)) FROM messages", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!((150_000..200_000).contains(&body), "{body}");
        let read: Vec<Part> = o.parts("a").unwrap().into_iter().map(|p| p.part).collect();
        assert_eq!(read, parts);
    }

    #[test]
    fn a_merged_message_is_named_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let o = SqliteOutbox::open(&path).unwrap();
        let mut a = record("a", "p1", 1, None);
        a.message = heavy("lobby", "first");
        let mut b = record("b", "p1", 2, None);
        b.message = heavy("lobby", "second");
        b.message.idempotency_key = Some("kb".into());
        o.insert(&a).unwrap();
        o.insert(&b).unwrap();
        // A merged-in message that is not a stored one is kept whole.
        let mut stranger = heavy("lobby", "third");
        stranger.sender = Some("someone else".into());
        let part = Part {
            target: String::new(),
            message: a.message.clone(),
            dedup_key: Some("7".into()),
            merged: vec![b.message.clone(), stranger],
        };
        o.save_plan("a", std::slice::from_ref(&part), &["b".into()])
            .unwrap();
        let (_, bytes) = part_bytes(&path);
        assert!(bytes < 1024, "the part holds {bytes} bytes");
        assert_eq!(o.parts("a").unwrap()[0].part, part);
        assert_eq!(o.get("b").unwrap().unwrap().state, MessageState::Merged);
    }

    /// An outbox written before attempts and part requests were counted
    /// gets both columns on open, at zero, and counts from then on.
    #[test]
    fn an_outbox_from_before_the_counts_gets_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let o = SqliteOutbox::open(&path).unwrap();
            o.insert(&record("a", "p1", 1, None)).unwrap();
            let part = Part {
                target: "m1".into(),
                message: record("a", "p1", 1, None).message,
                dedup_key: None,
                merged: Vec::new(),
            };
            o.save_plan("a", &[part], &[]).unwrap();
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "ALTER TABLE messages DROP COLUMN delivery_attempts;
                 ALTER TABLE parts DROP COLUMN requests;",
            )
            .unwrap();
        }
        let o = SqliteOutbox::open(&path).unwrap();
        let all = ListFilter {
            limit: 10,
            ..Default::default()
        };
        let listed = o.list_progress(&all).unwrap();
        assert_eq!((listed[0].attempts, listed[0].requests()), (0, 0));
        o.mark_sending("a").unwrap();
        o.part_requested("a", 0).unwrap();
        let listed = o.list_progress(&all).unwrap();
        assert_eq!((listed[0].attempts, listed[0].requests()), (1, 1));
        assert_eq!(listed[0].parts[0].target, "m1");
    }

    #[test]
    fn an_outbox_from_before_compact_parts_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut a = record("a", "p1", 1, None);
        a.message = heavy("lobby", "the first half the second half");
        let parts = meeting_parts(&a.message);
        {
            let o = SqliteOutbox::open(&path).unwrap();
            o.insert(&a).unwrap();
            o.insert(&record("b", "p1", 2, None)).unwrap();
            // What earlier hosts wrote: every part a whole `Part`, and no
            // format recorded.
            let c = Connection::open(&path).unwrap();
            for (i, part) in parts.iter().enumerate() {
                c.execute(
                    "INSERT INTO parts (message_id, idx, part, state) VALUES ('a', ?1, ?2, 'queued')",
                    params![i as i64, serde_json::to_string(part).unwrap()],
                )
                .unwrap();
            }
            c.execute("UPDATE messages SET planned = 1 WHERE id = 'a'", [])
                .unwrap();
            c.pragma_update(None, "user_version", 0).unwrap();
        }
        assert!(part_bytes(&path).1 > 6 * 150_000);
        let o = SqliteOutbox::open(&path).unwrap();
        let (rows, bytes) = part_bytes(&path);
        assert_eq!(rows, 6);
        assert!(bytes < 1024, "after the migration parts hold {bytes} bytes");
        let read: Vec<Part> = o.parts("a").unwrap().into_iter().map(|p| p.part).collect();
        assert_eq!(read, parts);
        assert_eq!(o.pending_count("p/default").unwrap(), 2);
    }

    /// Leaves: `old` (finished at 100, reported), `unreported` (finished at
    /// 100), `recent` (finished at 5000, reported), `queued`, and `owner`
    /// (finished at 100, reported) with `member` merged into it.
    pub(crate) fn prune_fixture(o: &dyn OutboxStore) {
        let rec = |id: &str, created: u64| {
            let mut r = record(id, "p1", created, None);
            r.message.idempotency_key = Some(format!("key-{id}"));
            r
        };
        for (i, id) in ["old", "unreported", "recent", "queued", "owner", "member"]
            .into_iter()
            .enumerate()
        {
            o.insert(&rec(id, i as u64)).unwrap();
        }
        let part = |r: &OutboxRecord, merged: Vec<Message>| Part {
            target: "m".into(),
            message: r.message.clone(),
            dedup_key: None,
            merged,
        };
        for id in ["old", "unreported", "recent"] {
            o.save_plan(id, &[part(&rec(id, 0), vec![])], &[]).unwrap();
        }
        o.save_plan(
            "owner",
            &[part(&rec("owner", 0), vec![rec("member", 0).message])],
            &["member".into()],
        )
        .unwrap();
        for (id, at) in [
            ("old", 100),
            ("unreported", 100),
            ("recent", 5000),
            ("owner", 100),
        ] {
            o.finish(id, MessageState::Delivered, 1, at, None).unwrap();
        }
        for id in ["old", "recent", "owner", "member"] {
            o.mark_reported(id).unwrap();
        }
    }

    /// What [`prune_fixture`] leaves after pruning before 1000.
    pub(crate) fn assert_pruned(o: &dyn OutboxStore) {
        // Two at most one at a time: `old` and `owner` (with `member`).
        assert_eq!(o.prune(1000, 1).unwrap(), 1);
        assert_eq!(o.prune(1000, 10).unwrap(), 1);
        assert_eq!(o.prune(1000, 10).unwrap(), 0);
        for gone in ["old", "owner", "member"] {
            assert!(o.get(gone).unwrap().is_none(), "{gone} pruned");
            assert!(o.parts(gone).unwrap().is_empty(), "{gone}'s parts pruned");
        }
        for kept in ["unreported", "recent", "queued"] {
            assert!(o.get(kept).unwrap().is_some(), "{kept} kept");
        }
        assert_eq!(o.parts("recent").unwrap().len(), 1);
        let listed: Vec<String> = o
            .list(&ListFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, ["queued", "recent", "unreported"]);
    }

    #[test]
    fn an_outbox_from_before_traces_gets_the_traceparent_column_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let o = SqliteOutbox::open(&path).unwrap();
            o.insert(&record("m-old", "a", 1, None)).unwrap();
        }
        // As a file written before the column existed.
        Connection::open(&path)
            .unwrap()
            .execute_batch("ALTER TABLE messages DROP COLUMN traceparent")
            .unwrap();
        let o = SqliteOutbox::open(&path).unwrap();
        assert_eq!(o.get("m-old").unwrap().unwrap().traceparent, None);
        let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut new = record("m-new", "a", 2, None);
        new.traceparent = Some(traced.into());
        o.insert(&new).unwrap();
        assert_eq!(
            o.get("m-new").unwrap().unwrap().traceparent.as_deref(),
            Some(traced)
        );
    }

    #[test]
    fn pruning_removes_reported_messages_past_the_retention_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let o = SqliteOutbox::open(&path).unwrap();
        prune_fixture(&o);
        assert_pruned(&o);
        let orphans: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM parts WHERE message_id NOT IN (SELECT id FROM messages)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }

    /// The backlog as the triggers keep it, and as counting every waiting
    /// message gives it.
    fn kept_and_counted(path: &Path, o: &SqliteOutbox) -> (Vec<PluginBacklog>, Vec<PluginBacklog>) {
        let kept = o.pending_by_plugin("p/default").unwrap();
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare(
                "SELECT plugin, COUNT(*), SUM(requests) FROM messages
                 WHERE endpoint = 'p/default' AND state IN ('queued', 'sending')
                 GROUP BY plugin ORDER BY plugin",
            )
            .unwrap();
        let counted = stmt
            .query_map([], |r| {
                Ok(PluginBacklog {
                    plugin: r.get(0)?,
                    messages: r.get::<_, i64>(1)? as usize,
                    requests: r.get::<_, i64>(2)? as usize,
                })
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (kept, counted)
    }

    /// The backlog the triggers keep is the count of waiting messages
    /// after every kind of change a message goes through: accepted (one
    /// request and three), claimed, merged into another, requeued,
    /// cancelled, delivered, retried, recovered after a crash and pruned;
    /// and a file whose count was lost is counted afresh on open.
    #[test]
    fn the_kept_backlog_is_the_count_of_waiting_messages_after_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let o = SqliteOutbox::open(&path).unwrap();
        let check = |o: &SqliteOutbox, step: &str| {
            let (kept, counted) = kept_and_counted(&path, o);
            assert_eq!(kept, counted, "after {step}");
            assert_eq!(
                o.pending_count("p/default").unwrap(),
                counted.iter().map(|b| b.messages).sum::<usize>(),
                "pending_count after {step}"
            );
        };
        for (i, plugin) in ["a", "a", "a", "b", "b", "c"].iter().enumerate() {
            let r = record(&format!("m{i}"), plugin, i as u64 + 1, None);
            o.insert_costed(&r, if *plugin == "b" { 3 } else { 1 })
                .unwrap();
        }
        check(&o, "accepts");
        assert_eq!(o.pending_by_plugin("p/default").unwrap().len(), 3);
        let claimed = o.claim_due("p/default", 100, 2, None).unwrap();
        assert_eq!(claimed.len(), 2);
        check(&o, "a claim");
        o.save_plan("m0", &[], &["m1".into()]).unwrap();
        check(&o, "a merge");
        o.requeue(&claimed[1].id, 200, 1, "try again").unwrap();
        check(&o, "a requeue");
        assert!(o.cancel("m5", 300).unwrap());
        check(&o, "a cancel");
        o.delivered(&[crate::delivery::store::Delivered {
            id: "m0".into(),
            index: 0,
            provider_ids: vec![],
            attempts: 1,
            finished_ms: 400,
        }])
        .unwrap();
        check(&o, "a delivery that ends a merge");
        o.finish("m3", MessageState::Failed, 1, 500, Some("refused"))
            .unwrap();
        check(&o, "a failure");
        assert!(o.retry("m3", 600).unwrap());
        check(&o, "a retry");
        o.claim_due("p/default", 10_000, 10, None).unwrap();
        check(&o, "a claim of everything due");
        assert!(o.recover().unwrap() > 0);
        check(&o, "recovery after a crash");
        for id in ["m2", "m3", "m4"] {
            o.finish(id, MessageState::Delivered, 1, 700, None).unwrap();
        }
        for r in o.unreported(100).unwrap() {
            o.mark_reported(&r.id).unwrap();
        }
        assert!(o.prune(10_000, 100).unwrap() > 0);
        check(&o, "delivering and pruning everything");
        assert!(o.pending_by_plugin("p/default").unwrap().is_empty());

        // A lost count is counted again from the messages on open.
        o.insert(&record("m9", "d", 9, None)).unwrap();
        drop(o);
        Connection::open(&path)
            .unwrap()
            .execute_batch("DELETE FROM backlog")
            .unwrap();
        let o = SqliteOutbox::open(&path).unwrap();
        check(&o, "reopening");
        assert_eq!(o.pending_by_plugin("p/default").unwrap().len(), 1);
    }

    pub(crate) fn record(id: &str, plugin: &str, created: u64, key: Option<&str>) -> OutboxRecord {
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
            traceparent: None,
        }
    }

    /// Disk bytes of an outbox file and its WAL after a checkpoint.
    fn disk_bytes(path: &Path) -> u64 {
        let c = Connection::open(path).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let wal = path.with_extension("sqlite-wal");
        std::fs::metadata(path).unwrap().len()
            + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    /// Runs `n` messages through the whole life a delivered message has
    /// (insert, plan, three part sends, finish, report). `old_parts`
    /// stores each part as a whole `Part`, as hosts before compact parts
    /// did; `prune_every` prunes everything finished, every that many.
    fn deliver_many(
        path: &Path,
        n: u64,
        message: &Message,
        old_parts: bool,
        prune_every: Option<u64>,
    ) -> u64 {
        let o = SqliteOutbox::open(path).unwrap();
        for i in 0..n {
            let id = format!("{i:020}");
            let mut r = record(&id, "p1", i, None);
            r.message = message.clone();
            r.message.idempotency_key = Some(format!("key-{i}"));
            o.insert(&r).unwrap();
            o.mark_sending(&id).unwrap();
            let parts: Vec<Part> = (0..3)
                .map(|m| Part {
                    target: format!("meeting-{m}"),
                    message: r.message.clone(),
                    dedup_key: None,
                    merged: Vec::new(),
                })
                .collect();
            o.save_plan(&id, &parts, &[]).unwrap();
            if old_parts {
                o.with(|c| {
                    for (idx, part) in parts.iter().enumerate() {
                        c.execute(
                            "UPDATE parts SET part = ?3 WHERE message_id = ?1 AND idx = ?2",
                            params![id, idx as i64, json(part)?],
                        )?;
                    }
                    Ok(())
                })
                .unwrap();
            }
            for idx in 0..3 {
                o.part_done(
                    &id,
                    idx,
                    PartState::Delivered,
                    &[format!("pid-{i}-{idx}")],
                    None,
                )
                .unwrap();
            }
            o.finish(&id, MessageState::Delivered, 3, i, None).unwrap();
            o.mark_reported(&id).unwrap();
            if let Some(every) = prune_every
                && (i + 1) % every == 0
            {
                while o.prune(i + 1, PRUNE_BATCH).unwrap() > 0 {}
            }
        }
        drop(o);
        disk_bytes(path)
    }

    /// Not a test: disk bytes per delivered message, before and after
    /// compact parts and pruning. `BOTBOX_OUTBOX_N` messages (default
    /// 20,000). Run with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_disk_per_delivered_message() {
        let n: u64 = std::env::var("BOTBOX_OUTBOX_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        // A realistic broadcast: 280 characters, a small `extra`, a sender,
        // three meetings.
        let mut realistic = heavy(
            "lobby",
            &"Meeting starts in five minutes. ".repeat(9)[..280],
        );
        realistic.extra = Some(
            r#"{"kind":"reminder","meeting":"weekly-sync","starts":"2026-12-06T09:00:00Z"}"#.into(),
        );
        realistic.options = None;
        let dir = tempfile::tempdir().unwrap();
        for (name, message, count) in [
            ("realistic", &realistic, n),
            ("at the caps", &heavy("lobby", "hi"), n / 100),
        ] {
            let before = deliver_many(
                &dir.path().join(format!("{name}-before.sqlite")),
                count,
                message,
                true,
                None,
            );
            let after = deliver_many(
                &dir.path().join(format!("{name}-after.sqlite")),
                count,
                message,
                false,
                None,
            );
            let pruned = deliver_many(
                &dir.path().join(format!("{name}-pruned.sqlite")),
                count,
                message,
                false,
                Some(count / 10),
            );
            let per = |b: u64| b as f64 / count as f64;
            println!(
                "{name}, {count} messages of 3 parts: whole parts {:.0} B/message ({:.2} GB per million); compact parts {:.0} B/message ({:.2} GB per million); compact and pruned every {} messages: file {} bytes",
                per(before),
                per(before) * 1e6 / 1e9,
                per(after),
                per(after) * 1e6 / 1e9,
                count / 10,
                pruned,
            );
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
