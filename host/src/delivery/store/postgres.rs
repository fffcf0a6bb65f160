//! The shared backend: one PostgreSQL database holds the outbox and the
//! throttles of every host that runs against the same provider accounts.
//!
//! Why PostgreSQL (and not Redis): a send needs "this host still holds the
//! message" and "the endpoint has a free slot" decided together, and one
//! transaction does that; the outbox is relational already (messages,
//! parts, sends), so it moves over unchanged; and a committed row is on disk,
//! which is the promise a receipt makes.
//!
//! - Claims: a worker takes a message with `FOR UPDATE SKIP LOCKED` and
//!   stamps it `claimed_by` this host until `lease_until`. A host that dies
//!   stops renewing; once the lease passes, any host may claim it again.
//! - Throttle: one row per endpoint, locked `FOR UPDATE` while the send
//!   history is checked against every window and the new send is written,
//!   so hosts take slots one at a time from one history. The same
//!   transaction renews the worker's lease, and refuses the slot when the
//!   lease went to another host: a message is sent by its one holder.
//! - Clocks: leases always use the database's clock (`clock_timestamp()`),
//!   so hosts' clocks do not matter. The throttle uses it too in real time;
//!   under `runtime.time_scale` (tests and demos) it uses the hosts' scaled
//!   clock, which every host anchors at the same origin stored here.
//!
//! The `postgres` client blocks on its own runtime, which must not run
//! inside the host's; each connection therefore lives on a thread of its
//! own and callers hand it work over a channel.
//!
//! No call waits without end, and none holds a tokio worker while it waits:
//! - the server cancels a statement after [`STATEMENT_TIMEOUT`]
//!   (`statement_timeout`, `lock_timeout`), a connection attempt gives up
//!   after `connect_timeout` (3 s unless the URL says), and TCP keepalives
//!   find a dead peer;
//! - the caller stops waiting after [`CALL_DEADLINE`] (or the shorter
//!   deadline set with [`with_deadline`], which `send-broadcast` uses) and
//!   gets [`OutboxError::Unavailable`]: a server that hangs (stopped, or cut
//!   off behind a proxy whose kernel still acknowledges) answers nothing,
//!   and only the caller's own clock notices. A job whose caller gave up
//!   before a connection took it is dropped unrun;
//! - a caller on a tokio worker waits inside `block_in_place`, so the
//!   worker's other tasks move to another thread meanwhile (see tokio's
//!   `task::block_in_place`); `send-broadcast` calls from `spawn_blocking`.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::batch::{Answer, GroupCommit, NewRow, copy_error};
use super::{
    COLUMNS, Columns, Dialect, Inserted, LISTED_COLUMNS, ListFilter, ListedMessage, MessageState,
    OutboxError, OutboxRecord, OutboxStore, PART_COLUMNS, PROGRESS_COLUMNS, PartRecord, PartState,
    PluginBacklog, Reservation, SEND_HISTORY_MS, ThrottleStore, attach_parts, decode_parts,
    encode_part, is_current, json, listed_from, member_taken, part_row, progress_row, record_from,
    reencode_part, schema,
};
use crate::config::Secret;
use crate::delivery::throttle::{Clock, Layer, Slowdown, Throttle, ThrottleKey, ThrottleSpec};
use crate::providers::Part;
use crate::wit::types::Message;

/// Connections per host. Each endpoint worker, `send-broadcast` and the
/// report loop block on one at a time.
pub const CONNECTIONS: usize = 4;

/// PostgreSQL's spelling of the shared tables; a message also records
/// who holds it (`claimed_by` until `lease_until`) and when it finished on
/// the database's clock.
const DIALECT: Dialect = Dialect {
    prefix: "botbox_",
    ms: "BIGINT",
    flag: "BOOLEAN",
    no: "FALSE",
    message_columns: "
    finished_at TIMESTAMPTZ,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,",
    parts_options: "",
};

/// The tables only a shared database has, after [`schema`]'s.
const SHARED_SCHEMA: &str = "
ALTER TABLE botbox_messages ADD COLUMN IF NOT EXISTS requests INTEGER NOT NULL DEFAULT 1;
ALTER TABLE botbox_messages ADD COLUMN IF NOT EXISTS traceparent TEXT;
ALTER TABLE botbox_messages ADD COLUMN IF NOT EXISTS delivery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE botbox_parts ADD COLUMN IF NOT EXISTS requests INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS botbox_messages_merged ON botbox_messages (merged_into);
CREATE TABLE IF NOT EXISTS botbox_throttles (
    endpoint TEXT PRIMARY KEY
);
ALTER TABLE botbox_throttles ADD COLUMN IF NOT EXISTS slowed_factor DOUBLE PRECISION;
ALTER TABLE botbox_throttles ADD COLUMN IF NOT EXISTS slowed_at_ms BIGINT;
ALTER TABLE botbox_sends ADD COLUMN IF NOT EXISTS cost_ms BIGINT;
CREATE TABLE IF NOT EXISTS botbox_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    parts_format INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS botbox_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    origin_ms BIGINT NOT NULL
);
";

/// The database's clock in Unix milliseconds.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The server cancels a statement (or a wait for a lock) that runs longer.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a caller waits for a database call's answer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(6);

/// The longest a readiness probe waits: shorter than a call's, since a
/// prober (a load balancer, Kubernetes) gives up after a few seconds.
pub const READY_DEADLINE: Duration = Duration::from_secs(2);

thread_local! {
    /// A deadline tighter than [`CALL_DEADLINE`] for this thread's calls.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with every PostgreSQL call it makes on this thread bounded by
/// `deadline` (or [`CALL_DEADLINE`], if that comes first).
pub fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEADLINE.with(|d| d.replace(Some(deadline))));
    f()
}

/// Waits without holding a tokio worker: inside `block_in_place` on a
/// multi-threaded runtime's worker; plainly elsewhere (a `spawn_blocking`
/// thread, a plain thread, a current-thread runtime, where
/// `block_in_place` would panic).
fn wait_outside_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The most statements one connection keeps prepared; past it the cache
/// starts over (batched inserts make a statement per batch size).
const PREPARED_STATEMENTS: usize = 128;

thread_local! {
    /// The statements prepared on this connection thread's current
    /// connection, by their SQL. `None` on every other thread, where
    /// statements are prepared for one use as before.
    ///
    /// Why: `query("...")` prepares its statement, runs it, then closes
    /// it, so every call was two round trips and a parse and plan on the
    /// server; the profiles of the delivery work put parsing and planning
    /// at a third of PostgreSQL's time. A statement prepared once per
    /// connection and kept is one round trip: a named prepared statement
    /// lasts until the session ends unless it is closed
    /// (<https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY>).
    /// Dropping a kept `Statement` (the cache starting over) closes it.
    static PREPARED: std::cell::RefCell<Option<std::collections::HashMap<String, postgres::Statement>>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts this thread's statement cache over, for a new connection (or
/// after an error, so that a statement the server no longer has, or whose
/// plan a schema change broke, is prepared again).
fn forget_prepared(keep_caching: bool) {
    PREPARED.with(|p| *p.borrow_mut() = keep_caching.then(Default::default));
}

/// `postgres`' query methods, with the statement prepared once per
/// connection on connection threads (see [`PREPARED`]).
trait Prepared: postgres::GenericClient {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = PREPARED.with(|p| p.borrow().as_ref().and_then(|m| m.get(sql).cloned())) {
            return Ok(s);
        }
        let statement = self.prepare(sql)?;
        PREPARED.with(|p| {
            if let Some(map) = p.borrow_mut().as_mut() {
                if map.len() >= PREPARED_STATEMENTS {
                    map.clear();
                }
                map.insert(sql.to_string(), statement.clone());
            }
        });
        Ok(statement)
    }

    fn query_p(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.query(&s, params)
    }

    fn query_one_p(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.query_one(&s, params)
    }

    fn query_opt_p(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.query_opt(&s, params)
    }

    fn execute_p(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.execute(&s, params)
    }
}

impl<C: postgres::GenericClient> Prepared for C {}

/// What a connection thread runs: given the connection, or why there is none.
type Work = Box<dyn for<'a> FnOnce(Result<&'a mut Client, String>) + Send>;

/// Work for a connection thread, and until when its caller waits for it.
struct Job {
    deadline: Instant,
    work: Work,
}

/// The outbox and the throttles of several hosts, in one PostgreSQL database.
pub struct PgOutbox {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Concurrent accepts, inserted together (see [`super::batch`]).
    accepts: GroupCommit,
    /// Who this host is in `claimed_by`.
    host_id: String,
    lease: Duration,
}

/// Where the database is, for messages: never the password.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL at {}:{port}, database `{}`",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Why a connection failed, for [`OutboxError::Unavailable`].
fn unavailable(place: &str, e: &postgres::Error) -> String {
    // The TLS error's reason (such as rustls's "invalid peer certificate:
    // UnknownIssuer") is in the error's sources.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if text.contains("TLS") || text.contains("certificate") {
        return format!(
            "{place} refused a TLS session: {text}; check `sslmode` and `sslrootcert` in `storage.postgres_url` (verify-full needs a certificate that chains to sslrootcert and names the host) and the server's `ssl` settings"
        );
    }
    // A lost connection or a refused one: the engine is down or unreachable.
    format!(
        "{place} cannot be reached: {text}; check that it is running and that `storage.postgres_url` points at it"
    )
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String, OutboxError> {
        self.try_get(i).map_err(column)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, OutboxError> {
        self.try_get(i).map_err(column)
    }
    fn int(&self, i: usize) -> Result<i64, OutboxError> {
        // BIGINT for times, INTEGER for counts.
        self.try_get::<_, i64>(i)
            .or_else(|_| self.try_get::<_, i32>(i).map(i64::from))
            .map_err(column)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, OutboxError> {
        self.try_get(i).map_err(column)
    }
    fn flag(&self, i: usize) -> Result<bool, OutboxError> {
        self.try_get(i).map_err(column)
    }
}

fn column(e: postgres::Error) -> OutboxError {
    OutboxError::Corrupt(e.to_string())
}

/// Databases written before the current part format stored a whole copy
/// of the message in every part: rewrites those parts, once, inside the
/// schema transaction (so one host does it while the others wait).
fn migrate_parts(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    const FORMAT: i32 = 2;
    let done = tx
        .query_opt_p("SELECT parts_format FROM botbox_schema WHERE id = 1", &[])?
        .is_some_and(|row| row.get::<_, i32>(0) >= FORMAT);
    if done {
        return Ok(());
    }
    let rows = tx.query_p(
        "SELECT p.message_id, p.idx, p.part, m.message FROM botbox_parts p JOIN botbox_messages m ON m.id = p.message_id",
        &[],
    )?;
    let mut rewritten = 0usize;
    for row in rows {
        let (id, idx, stored, owner): (String, i32, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if is_current(&stored) {
            continue;
        }
        let members: Vec<(String, String)> = tx
            .query_p(
                "SELECT id, message FROM botbox_messages WHERE merged_into = $1",
                &[&id],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        match reencode_part(&id, i64::from(idx), &stored, &owner, &members) {
            Ok(encoded) => {
                tx.execute_p(
                    "UPDATE botbox_parts SET part = $3 WHERE message_id = $1 AND idx = $2",
                    &[&id, &idx, &encoded],
                )?;
                rewritten += 1;
            }
            Err(e) => tracing::warn!("outbox part {id}/{idx} kept in the old format: {e}"),
        }
    }
    tx.execute_p(
        "INSERT INTO botbox_schema (id, parts_format) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET parts_format = excluded.parts_format",
        &[&FORMAT],
    )?;
    if rewritten > 0 {
        tracing::info!(
            parts = rewritten,
            "shared outbox migrated: parts no longer copy their message"
        );
    }
    Ok(())
}

/// Stores message `id`'s parts and marks `absorbed` as carried inside
/// them, within the caller's transaction; fails, leaving the caller to
/// roll back, when a message to carry was taken meanwhile.
fn write_plan(
    tx: &mut postgres::Transaction<'_>,
    id: &str,
    parts: &[Part],
    absorbed: &[String],
) -> Result<(), PgFailure> {
    let owner = message_of(tx, id)?
        .ok_or_else(|| OutboxError::Corrupt(format!("message {id} is not in the outbox")))?;
    let mut members = Vec::with_capacity(absorbed.len());
    for member in absorbed {
        let n = tx.execute_p(
            "UPDATE botbox_messages SET state = 'merged', merged_into = $2 WHERE id = $1 AND state = 'queued'",
            &[member, &id],
        )?;
        if n == 0 {
            return Err(member_taken(member, id).into());
        }
        if let Some(message) = message_of(tx, member)? {
            members.push((member.clone(), message));
        }
    }
    tx.execute_p("DELETE FROM botbox_parts WHERE message_id = $1", &[&id])?;
    for (i, part) in parts.iter().enumerate() {
        let encoded = encode_part(&owner, &members, part)?;
        tx.execute_p(
            "INSERT INTO botbox_parts (message_id, idx, part, state) VALUES ($1, $2, $3, 'queued')",
            &[&id, &(i as i32), &encoded],
        )?;
    }
    tx.execute_p(
        "UPDATE botbox_messages SET planned = TRUE WHERE id = $1",
        &[&id],
    )?;
    Ok(())
}

/// The stored body of message `id`.
fn message_of(
    c: &mut impl postgres::GenericClient,
    id: &str,
) -> Result<Option<Message>, PgFailure> {
    let Some(row) = c.query_opt_p("SELECT message FROM botbox_messages WHERE id = $1", &[&id])?
    else {
        return Ok(None);
    };
    let text: String = row.get(0);
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| OutboxError::Corrupt(format!("message {id}: {e}")).into())
}

fn records(rows: Vec<Row>) -> Result<Vec<OutboxRecord>, OutboxError> {
    rows.iter().map(record_from).collect()
}

impl PgOutbox {
    /// One batch of the group commit: all of `rows` in one multi-row
    /// `INSERT` (one statement, so one transaction and one WAL flush; a
    /// committed row is on disk, `synchronous_commit` being on by default,
    /// which is what the receipt promises). A row whose idempotency key is
    /// taken (by an earlier message, or an earlier row of the same batch)
    /// is skipped and answered with the first message's id. When the
    /// statement is refused, each row is tried again on its own, so only
    /// the caller whose row is bad hears an error; when the engine cannot
    /// be reached, every caller hears so.
    fn commit_batch(&self, rows: Vec<NewRow>) -> Vec<Answer> {
        let count = rows.len();
        let shared = Arc::new(rows);
        let batch = shared.clone();
        match self.run(move |c| insert_rows(c, &batch)) {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(OutboxError::Postgres(e)) if count > 1 => {
                tracing::debug!(
                    "a batch of {count} accepts was refused ({e}); inserting them one by one"
                );
                (0..shared.len())
                    .map(|i| {
                        let rows = shared.clone();
                        self.run(move |c| insert_rows(c, &rows[i..=i]))?
                            .pop()
                            .ok_or(OutboxError::Poisoned)
                    })
                    .collect()
            }
            Err(e) => (0..count).map(|_| Err(copy_error(&e))).collect(),
        }
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

    /// Stores `r` in a statement and transaction of its own: what every
    /// accept did before group commit, kept as the benchmark's reference.
    pub fn insert_alone(&self, r: &OutboxRecord, requests: u32) -> Result<Inserted, OutboxError> {
        let rows = Arc::new(vec![NewRow::of(r, requests)?]);
        self.run(move |c| insert_rows(c, &rows))?
            .pop()
            .ok_or(OutboxError::Poisoned)
    }

    /// Connects, creates the tables if they are missing, and starts the
    /// connection threads. `lease`: how long a claim outlives its host.
    pub fn open(url: &Secret, lease: Duration) -> Result<PgOutbox, OutboxError> {
        PgOutbox::open_with(url, lease, CONNECTIONS)
    }

    /// [`PgOutbox::open`] with `connections` connections (at least one)
    /// instead of [`CONNECTIONS`].
    pub fn open_with(
        url: &Secret,
        lease: Duration,
        connections: usize,
    ) -> Result<PgOutbox, OutboxError> {
        let target =
            crate::storage::postgres_target(url, "botbox").map_err(OutboxError::Unavailable)?;
        let mut config = postgres::Config::from(target.config);
        let tls = target.tls;
        // A peer that vanished (a partition, a crashed machine) is found
        // within about 10 + 3 × 5 s instead of the kernel's two hours.
        if !config.get_keepalives() || config.get_keepalives_idle() > Duration::from_secs(10) {
            config.keepalives(true);
            config.keepalives_idle(Duration::from_secs(10));
        }
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        // Sent data nobody acknowledges for this long closes the socket.
        config.tcp_user_timeout(CALL_DEADLINE);
        let place = describe(&config);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..connections.max(1) {
            let rx = rx.clone();
            let config = config.clone();
            let place = place.clone();
            let tls = tls.clone();
            std::thread::Builder::new()
                .name(format!("botbox-pg-{i}"))
                .spawn(move || connection_thread(config, tls, place, rx))
                .map_err(|e| OutboxError::Unavailable(format!("cannot start a thread: {e}")))?;
        }
        let host_id = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        let outbox = PgOutbox {
            jobs: Mutex::new(tx),
            accepts: GroupCommit::default(),
            host_id,
            lease,
        };
        outbox.run(|c| {
            // Two hosts starting together would race on CREATE IF NOT
            // EXISTS; an advisory lock makes them take turns.
            let mut tx = c.transaction()?;
            tx.execute_p("SELECT pg_advisory_xact_lock(7041999)", &[])?;
            tx.batch_execute(&schema(&DIALECT))?;
            tx.batch_execute(SHARED_SCHEMA)?;
            migrate_parts(&mut tx)?;
            tx.commit()
        })?;
        Ok(outbox)
    }

    /// Who this host is in `claimed_by`.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Whether this host's session runs over TLS, as the server sees it
    /// (`pg_stat_ssl`).
    pub fn session_tls(&self) -> Result<bool, OutboxError> {
        self.run(|c| {
            let row = c.query_one_p(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?;
            Ok(row.get(0))
        })
    }

    /// The origin every host's scaled clock counts from: the first host
    /// to ask stores its wall clock's now.
    pub fn clock_origin(&self, proposed_ms: u64) -> Result<u64, OutboxError> {
        self.run(move |c| {
            c.execute_p(
                "INSERT INTO botbox_clock (id, origin_ms) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&(proposed_ms as i64)],
            )?;
            let row = c.query_one_p("SELECT origin_ms FROM botbox_clock WHERE id = 1", &[])?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// The SQL of the statements that the connection taking this call
    /// keeps prepared (`pg_prepared_statements`), for diagnostics and
    /// tests: with [`PgOutbox::open_with`] and one connection, every
    /// statement this outbox has run and kept.
    pub fn prepared_statements(&self) -> Result<Vec<String>, OutboxError> {
        self.run(|c| {
            // Not through the cache: this one is not kept.
            let rows = c.query(
                "SELECT statement FROM pg_prepared_statements ORDER BY statement",
                &[],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Runs `f` on a connection thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, OutboxError> {
        self.run_checked(move |c| f(c).map_err(PgFailure::Db))
    }

    fn run_checked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, PgFailure> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let (answer, result) = mpsc::sync_channel(1);
        let started = Instant::now();
        let deadline = started + CALL_DEADLINE;
        let deadline = DEADLINE
            .with(Cell::get)
            .map_or(deadline, |d| d.min(deadline));
        let job = Job {
            deadline,
            work: Box::new(move |client: Result<&mut Client, String>| {
                let out = match client {
                    Ok(client) => f(client),
                    Err(reason) => Err(PgFailure::Other(OutboxError::Unavailable(reason))),
                };
                if let Err(PgFailure::Db(_)) = out {
                    forget_prepared(true);
                }
                let _ = answer.send(out);
            }),
        };
        self.jobs
            .lock()
            .map_err(|_| OutboxError::Poisoned)?
            .send(job)
            .map_err(|_| OutboxError::Poisoned)?;
        let answer = wait_outside_runtime(|| {
            result.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        });
        match answer {
            Err(mpsc::RecvTimeoutError::Timeout) => Err(OutboxError::Unavailable(format!(
                "PostgreSQL did not answer within {} ms; check that the server is up and reachable",
                started.elapsed().as_millis()
            ))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(PgFailure::Db(e))) if lost_connection(&e) => {
                Err(OutboxError::Unavailable(format!(
                    "the connection to PostgreSQL broke: {e}; check that the server is running"
                )))
            }
            Ok(Err(PgFailure::Db(e))) => Err(OutboxError::Postgres(e.to_string())),
            Ok(Err(PgFailure::Other(e))) => Err(e),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(OutboxError::Poisoned),
        }
    }
}

/// Whether an error means the engine went away (rather than a statement
/// failing): a closed socket, or the server shutting sessions down (SQLSTATE
/// class 57, operator intervention, and 08, connection exception).
fn lost_connection(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => code.code().starts_with("57") || code.code().starts_with("08"),
        None => e.as_db_error().is_none(),
    }
}

/// The columns a new message binds, in `insert_rows`' order.
const INSERT_COLUMNS: usize = 10;

/// Inserts `rows` with one statement; answers each, in order.
fn insert_rows(c: &mut Client, rows: &[NewRow]) -> Result<Vec<Inserted>, postgres::Error> {
    let mut sql = String::from(
        "INSERT INTO botbox_messages (id, plugin, channel, endpoint, message, idempotency_key, state, created_ms, next_attempt_ms, requests, traceparent) VALUES ",
    );
    let requests: Vec<i32> = rows
        .iter()
        .map(|r| r.requests.clamp(1, i32::MAX as u32) as i32)
        .collect();
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        Vec::with_capacity(rows.len() * INSERT_COLUMNS);
    for (i, (r, requests)) in rows.iter().zip(&requests).enumerate() {
        let n = i * INSERT_COLUMNS;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, 'queued', ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8,
            n + 9,
            n + 10
        ));
        params.extend([
            &r.id as &(dyn postgres::types::ToSql + Sync),
            &r.plugin,
            &r.channel,
            &r.endpoint,
            &r.message,
            &r.idempotency_key,
            &r.created_ms,
            &r.next_attempt_ms,
            requests,
            &r.traceparent,
        ]);
    }
    sql.push_str(" ON CONFLICT (plugin, channel, idempotency_key) DO NOTHING RETURNING id");
    let stored: std::collections::HashSet<String> = c
        .query_p(&sql, &params)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut answers = Vec::with_capacity(rows.len());
    for r in rows {
        if stored.contains(&r.id) {
            answers.push(Inserted::New);
            continue;
        }
        // Skipped for its idempotency key: the receipt is the first one's.
        let existing = c.query_one_p(
            "SELECT id FROM botbox_messages WHERE plugin = $1 AND channel = $2 AND idempotency_key = $3",
            &[&r.plugin, &r.channel, &r.idempotency_key],
        )?;
        answers.push(Inserted::Duplicate(existing.get(0)));
    }
    Ok(answers)
}

/// What went wrong inside a job.
enum PgFailure {
    Db(postgres::Error),
    Other(OutboxError),
}

impl From<postgres::Error> for PgFailure {
    fn from(e: postgres::Error) -> Self {
        PgFailure::Db(e)
    }
}

impl From<OutboxError> for PgFailure {
    fn from(e: OutboxError) -> Self {
        PgFailure::Other(e)
    }
}

/// One connection, reconnected whenever a job finds it closed, so the
/// outbox resumes by itself once the engine is back.
fn connection_thread(
    config: postgres::Config,
    tls: MakeRustlsConnect,
    place: String,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
) {
    let mut client: Option<Client> = None;
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // Its caller stopped waiting (the server hung, and the jobs queued
        // behind it): running it now would do what the caller was told
        // failed.
        if Instant::now() >= job.deadline {
            continue;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            forget_prepared(true);
            client = match connect(&config, &tls) {
                Ok(c) => Some(c),
                Err(e) => {
                    (job.work)(Err(unavailable(&place, &e)));
                    continue;
                }
            };
        }
        match client.as_mut() {
            Some(c) => (job.work)(Ok(c)),
            None => (job.work)(Err(format!("{place} is not connected"))),
        }
    }
}

/// A new session, with the server-side timeouts set.
fn connect(config: &postgres::Config, tls: &MakeRustlsConnect) -> Result<Client, postgres::Error> {
    let mut client = config.connect(tls.clone())?;
    let ms = STATEMENT_TIMEOUT.as_millis();
    client.batch_execute(&format!(
        "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET idle_in_transaction_session_timeout = {}",
        ms * 2
    ))?;
    Ok(client)
}

impl PgOutbox {
    /// Takes a slot of `endpoint` for message `id` (see [`Self::reserve_layers`]).
    pub fn reserve(
        &self,
        endpoint: &str,
        spec: &ThrottleSpec,
        margin_ms: u64,
        id: &str,
        now_ms: Option<u64>,
    ) -> Result<Reservation, OutboxError> {
        let layers = vec![Layer {
            name: endpoint.to_string(),
            spec: spec.clone(),
        }];
        self.reserve_layers(layers, margin_ms, id, now_ms)
    }

    /// Takes a slot of every history in `layers` (an endpoint's, its key's,
    /// the account's ceiling) for message `id`, which this host must still
    /// hold, and renews that claim, in one transaction that holds the
    /// histories' rows: the read-modify-write that [`Throttle::take_all`]
    /// decides on. `now_ms`: the hosts' common scaled time, or `None` for
    /// the database's own clock.
    pub fn reserve_layers(
        &self,
        layers: Vec<Layer>,
        margin_ms: u64,
        id: &str,
        now_ms: Option<u64>,
    ) -> Result<Reservation, OutboxError> {
        self.reserve_layers_for(layers, margin_ms, vec![id.to_string()], now_ms)?
            .pop()
            .ok_or(OutboxError::Poisoned)
    }

    /// [`PgOutbox::reserve_layers`] for several messages at once, in one
    /// transaction: the histories' rows are locked once, every claim still
    /// held is renewed in one statement, and the messages take their slots
    /// in the order of `ids`, each decided by [`Throttle::take_all`] over
    /// the history with the slots granted before it counted. The first
    /// that must wait stops the rest (they would wait at least as long).
    /// A message whose claim is no longer this host's gets
    /// [`Reservation::LeaseLost`]. Answers in the order of `ids`.
    pub fn reserve_layers_for(
        &self,
        mut layers: Vec<Layer>,
        margin_ms: u64,
        ids: Vec<String>,
        now_ms: Option<u64>,
    ) -> Result<Vec<Reservation>, OutboxError> {
        // Every host locks the rows in the same order: no deadlock between
        // two endpoints that share a ceiling.
        layers.sort_by(|a, b| a.name.cmp(&b.name));
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            // Hosts take these histories' slots one at a time. A row is
            // made once, by whichever host needs it first.
            let lock = "SELECT slowed_factor, slowed_at_ms FROM botbox_throttles WHERE endpoint = $1 FOR UPDATE";
            let mut slowdowns = Vec::with_capacity(layers.len());
            for layer in &layers {
                let row = match tx.query_opt_p(lock, &[&layer.name])? {
                    Some(row) => row,
                    None => {
                        tx.execute_p(
                            "INSERT INTO botbox_throttles (endpoint) VALUES ($1) ON CONFLICT DO NOTHING",
                            &[&layer.name],
                        )?;
                        tx.query_one_p(lock, &[&layer.name])?
                    }
                };
                slowdowns.push(slowdown_from(&row));
            }
            // Renew the claims, and read the clock only now that the locks
            // are ours: a host that waited for them must not stamp a send
            // before the previous holder's.
            //
            // Like SQLite's throttle history, this transaction sits just
            // before a request, so it skips the WAL flush: a crashed
            // *server* could forget the last fraction of a second of sends,
            // a killed host or a restarted server forgets nothing. Set here
            // (`set_config(…, true)` is `SET LOCAL`, read at the commit)
            // rather than by a statement of its own: one round trip fewer
            // while the throttle rows are locked. A transaction that does
            // not get this far writes nothing or rolls back.
            let held = tx.query_p(
                &format!(
                    "UPDATE botbox_messages SET lease_until = clock_timestamp() + make_interval(secs => $3)
                     WHERE id = ANY($1) AND claimed_by = $2 AND state = 'sending'
                     RETURNING id, {DB_NOW_MS}, set_config('synchronous_commit', 'off', true)"
                ),
                &[&ids, &host, &lease],
            )?;
            if held.is_empty() {
                tx.rollback()?;
                return Ok(ids.iter().map(|_| Reservation::LeaseLost).collect());
            }
            let now: i64 = match now_ms {
                Some(ms) => ms as i64,
                None => held.iter().map(|r| r.get::<_, i64>(1)).max().unwrap_or(0),
            };
            let held: HashSet<String> = held.iter().map(|r| r.get(0)).collect();
            let mut throttles = Vec::with_capacity(layers.len());
            let mut reaches = Vec::with_capacity(layers.len());
            for (layer, slowdown) in layers.iter().zip(slowdowns) {
                // A slowed history's windows are longer: read (and keep)
                // as far back as they now reach.
                let reach = Slowdown::horizon_ms(&layer.spec, slowdown, now as u64);
                reaches.push(reach);
                let since = now.saturating_sub(reach as i64);
                let rows = tx.query_p(
                    "SELECT at_ms, cost_ms FROM botbox_sends WHERE endpoint = $1 AND at_ms >= $2 ORDER BY at_ms",
                    &[&layer.name, &since],
                )?;
                let history: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
                let mut throttle = Throttle::with_history(layer.spec.clone(), margin_ms, history);
                throttle.set_slowdown(slowdown);
                // Every host's reported execution times, for budgets.
                for r in &rows {
                    if let Some(cost) = r.get::<_, Option<i64>>(1) {
                        throttle.charge(r.get::<_, i64>(0) as u64, cost as u64);
                    }
                }
                throttles.push(throttle);
            }
            let mut refs: Vec<&mut Throttle> = throttles.iter_mut().collect();
            let mut granted: i64 = 0;
            let mut wait: Option<u64> = None;
            let answers = ids
                .iter()
                .map(|id| {
                    if !held.contains(id) {
                        return Reservation::LeaseLost;
                    }
                    if let Some(ms) = wait {
                        return Reservation::Wait(ms);
                    }
                    match Throttle::take_all(&mut refs, now as u64) {
                        Ok(at) => {
                            granted += 1;
                            Reservation::Granted(at)
                        }
                        Err(ms) => {
                            wait = Some(ms);
                            Reservation::Wait(ms)
                        }
                    }
                })
                .collect();
            if granted > 0 {
                for (layer, reach) in layers.iter().zip(&reaches) {
                    // History older than every window is dropped as it
                    // goes, past twice their reach: a "too fast" that
                    // halves the rate then still finds the sends its
                    // stretched windows count.
                    let since = now.saturating_sub(2 * *reach as i64);
                    tx.execute_p(
                        "WITH old AS (DELETE FROM botbox_sends WHERE endpoint = $1 AND at_ms < $3)
                         INSERT INTO botbox_sends (endpoint, at_ms) SELECT $1, $2 FROM generate_series(1::bigint, $4::bigint)",
                        &[&layer.name, &now, &since, &granted],
                    )?;
                }
            }
            tx.commit()?;
            Ok(answers)
        })
    }

    /// Halves the allowed rate of the history `layer` at `now_ms` (`None`:
    /// the database's clock), for every host: the slowdown lives in the
    /// history's row. Returns the fraction of the documented rate allowed.
    pub fn slow_down_at(&self, layer: &Layer, now_ms: Option<u64>) -> Result<f64, OutboxError> {
        let layer = layer.clone();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute_p(
                "INSERT INTO botbox_throttles (endpoint) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&layer.name],
            )?;
            let row = tx.query_one_p(
                &format!(
                    "SELECT slowed_factor, slowed_at_ms, {DB_NOW_MS} FROM botbox_throttles WHERE endpoint = $1 FOR UPDATE"
                ),
                &[&layer.name],
            )?;
            let now = now_ms.unwrap_or(row.get::<_, i64>(2) as u64);
            let recovery = Slowdown::recovery_ms(&layer.spec);
            let cut = Slowdown::cut(slowdown_from(&row), now, recovery);
            tx.execute_p(
                "UPDATE botbox_throttles SET slowed_factor = $2, slowed_at_ms = $3 WHERE endpoint = $1",
                &[&layer.name, &cut.factor, &(cut.at_ms as i64)],
            )?;
            tx.commit()?;
            Ok(cut.factor)
        })
    }

    /// Moves the send granted at `stamped_ms` to as late as its answer, at
    /// `answered_ms` (`None`: the database's clock now), allows, by
    /// [`Throttle::history_shift`]: one history serves every window here.
    pub fn answered_at(
        &self,
        endpoint: &str,
        spec: &ThrottleSpec,
        margin_ms: u64,
        stamped_ms: u64,
        answered_ms: Option<u64>,
    ) -> Result<(), OutboxError> {
        self.answered_all_at(endpoint, spec, margin_ms, &[stamped_ms], answered_ms)
    }

    /// [`PgOutbox::answered_at`] for several requests answered at
    /// `answered_ms`, in one statement: one send of each stamp in
    /// `stamped_ms` moves (a stamp twice: two of its sends), since slots
    /// granted together share a stamp (`reserve_layers_for`) and each
    /// answer moves its own.
    pub fn answered_all_at(
        &self,
        endpoint: &str,
        spec: &ThrottleSpec,
        margin_ms: u64,
        stamped_ms: &[u64],
        answered_ms: Option<u64>,
    ) -> Result<(), OutboxError> {
        let Some(back) = Throttle::history_shift(spec, margin_ms) else {
            return Ok(());
        };
        if stamped_ms.is_empty() {
            return Ok(());
        }
        let back = back as i64;
        let endpoint = endpoint.to_string();
        let stamps: Vec<i64> = stamped_ms.iter().map(|ms| *ms as i64).collect();
        let answered = answered_ms.map(|ms| ms as i64);
        // Like a reservation's, this write sits between requests and skips
        // the WAL flush (see `reserve_layers_for`): the one-statement
        // transaction turns it off for itself.
        let sql = format!(
            "WITH wanted AS (
                 SELECT stamp, count(*) AS n FROM unnest($2::bigint[]) AS w(stamp) GROUP BY stamp
             ), picked AS (
                 SELECT s.ctid FROM (
                     SELECT ctid, at_ms, row_number() OVER (PARTITION BY at_ms) AS k
                     FROM botbox_sends WHERE endpoint = $1 AND at_ms = ANY($2)
                 ) AS s JOIN wanted ON wanted.stamp = s.at_ms AND s.k <= wanted.n
             )
             UPDATE botbox_sends SET at_ms = GREATEST(botbox_sends.at_ms, COALESCE($3, {DB_NOW_MS}) - $4)
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed
             WHERE botbox_sends.ctid IN (SELECT ctid FROM picked)"
        );
        self.run(move |c| {
            c.execute_p(&sql, &[&endpoint, &stamps, &answered, &back])?;
            Ok(())
        })
    }

    /// Counts a send of `endpoint` at `at_ms`, outside any reservation.
    pub fn record_send(&self, endpoint: &str, at_ms: u64) -> Result<(), OutboxError> {
        let endpoint = endpoint.to_string();
        self.run(move |c| {
            c.execute_p(
                "INSERT INTO botbox_sends (endpoint, at_ms) VALUES ($1, $2)",
                &[&endpoint, &(at_ms as i64)],
            )?;
            Ok(())
        })
    }

    /// The sends of `endpoint` since `since_ms`, every host's, oldest first.
    pub fn sends_since(&self, endpoint: &str, since_ms: u64) -> Result<Vec<u64>, OutboxError> {
        let endpoint = endpoint.to_string();
        self.run(move |c| {
            let rows = c.query_p(
                "SELECT at_ms FROM botbox_sends WHERE endpoint = $1 AND at_ms >= $2 ORDER BY at_ms",
                &[&endpoint, &(since_ms as i64)],
            )?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        })
    }
}

/// The slowdown stored in a `botbox_throttles` row (its first two columns).
fn slowdown_from(row: &Row) -> Option<Slowdown> {
    let factor: Option<f64> = row.get(0);
    let at: Option<i64> = row.get(1);
    Some(Slowdown {
        factor: factor?,
        at_ms: at? as u64,
    })
}

/// The hosts' common scaled time, or `None` in real time, where the
/// database's clock decides (hosts' clocks do not matter).
fn shared_now(clock: &dyn Clock) -> Option<u64> {
    (!clock.real_time()).then(|| clock.now_ms())
}

impl ThrottleStore for PgOutbox {
    fn shared(&self) -> bool {
        true
    }

    fn estimate(&self, key: &ThrottleKey, n: usize, now_ms: u64) -> Result<u64, OutboxError> {
        // Other hosts send too: estimate from the shared histories (the
        // endpoint's and the ceiling's; a message's key is known only once
        // it is planned).
        let mut eta = now_ms;
        for layer in key.layers(None) {
            // A slowdown stretches the windows: every host's, from the row.
            let name = layer.name.clone();
            let slowdown = self.run(move |c| {
                Ok(c.query_opt_p(
                    "SELECT slowed_factor, slowed_at_ms FROM botbox_throttles WHERE endpoint = $1",
                    &[&name],
                )?
                .and_then(|row| slowdown_from(&row)))
            })?;
            let reach = Slowdown::horizon_ms(&layer.spec, slowdown, now_ms);
            let history = self.sends_since(&layer.name, now_ms.saturating_sub(reach))?;
            let mut throttle = Throttle::with_history(layer.spec, key.margin_ms, history);
            throttle.set_slowdown(slowdown);
            eta = eta.max(throttle.eta_of_nth(n, now_ms));
        }
        Ok(eta)
    }

    fn state_at(&self, key: &ThrottleKey, now_ms: u64) -> Result<Throttle, OutboxError> {
        // Every host's sends, from the shared history.
        let since = now_ms.saturating_sub(key.spec.horizon_ms());
        let history = self.sends_since(&key.endpoint, since)?;
        Ok(Throttle::with_history(
            key.spec.clone(),
            key.margin_ms,
            history,
        ))
    }

    fn take(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        claim: &str,
        clock: &dyn Clock,
    ) -> Result<Reservation, OutboxError> {
        self.reserve_layers(key.layers(scope), key.margin_ms, claim, shared_now(clock))
    }

    fn take_many(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        claims: &[&str],
        clock: &dyn Clock,
    ) -> Vec<Result<Reservation, OutboxError>> {
        let ids = claims.iter().map(|c| c.to_string()).collect();
        match self.reserve_layers_for(key.layers(scope), key.margin_ms, ids, shared_now(clock)) {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = e.to_string();
                claims
                    .iter()
                    .map(|_| Err(OutboxError::Unavailable(e.clone())))
                    .collect()
            }
        }
    }

    fn answered(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        stamped_ms: u64,
        clock: &dyn Clock,
    ) -> Result<(), OutboxError> {
        self.answered_many(key, scope, &[stamped_ms], clock)
    }

    fn answered_many(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        stamped_ms: &[u64],
        clock: &dyn Clock,
    ) -> Result<(), OutboxError> {
        for layer in key.layers(scope) {
            self.answered_all_at(
                &layer.name,
                &layer.spec,
                key.margin_ms,
                stamped_ms,
                shared_now(clock),
            )?;
        }
        Ok(())
    }

    fn charge(&self, key: &ThrottleKey, stamped_ms: u64, cost_ms: u64) -> Result<(), OutboxError> {
        let endpoint = key.endpoint.clone();
        self.run(move |c| {
            // The send may have been moved later by its answer
            // (`answered_at`): the first uncharged one from its stamp on.
            c.execute_p(
                "UPDATE botbox_sends SET cost_ms = $3 WHERE ctid = (
                     SELECT ctid FROM botbox_sends
                     WHERE endpoint = $1 AND at_ms >= $2 AND cost_ms IS NULL
                     ORDER BY at_ms LIMIT 1)",
                &[&endpoint, &(stamped_ms as i64), &(cost_ms as i64)],
            )?;
            Ok(())
        })
    }

    fn slow_down(
        &self,
        _key: &ThrottleKey,
        layer: &Layer,
        clock: &dyn Clock,
    ) -> Result<f64, OutboxError> {
        self.slow_down_at(layer, shared_now(clock))
    }
}

impl OutboxStore for PgOutbox {
    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn insert(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.insert_costed(r, 1)
    }

    fn insert_costed(&self, r: &OutboxRecord, requests: u32) -> Result<Inserted, OutboxError> {
        let row = NewRow::of(r, requests)?;
        self.accepts.insert(row, |rows| self.commit_batch(rows))
    }

    fn pending_count(&self, endpoint: &str) -> Result<usize, OutboxError> {
        let endpoint = endpoint.to_string();
        self.run(move |c| {
            let row = c.query_one_p(
                "SELECT COUNT(*) FROM botbox_messages WHERE endpoint = $1 AND state IN ('queued', 'sending')",
                &[&endpoint],
            )?;
            Ok(row.get::<_, i64>(0) as usize)
        })
    }

    fn next_due(
        &self,
        endpoint: &str,
        now_ms: u64,
        after_plugin: Option<&str>,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        let endpoint = endpoint.to_string();
        let after = after_plugin.unwrap_or("").to_string();
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        self.run_checked(move |c| {
            // Queued and due, or claimed by a host whose lease ran out.
            let sql = format!(
                "UPDATE botbox_messages SET state = 'sending', claimed_by = $4,
                        lease_until = clock_timestamp() + make_interval(secs => $5)
                 WHERE id = (
                    SELECT id FROM botbox_messages
                    WHERE endpoint = $1 AND plugin > $3
                      AND ((state = 'queued' AND next_attempt_ms <= $2)
                        OR (state = 'sending' AND lease_until < clock_timestamp()))
                    ORDER BY plugin, created_ms, id LIMIT 1
                    FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            );
            let now = now_ms as i64;
            let mut row = c.query_opt_p(&sql, &[&endpoint, &now, &after, &host, &lease])?;
            if row.is_none() && !after.is_empty() {
                row = c.query_opt_p(&sql, &[&endpoint, &now, &"", &host, &lease])?;
            }
            Ok(row.as_ref().map(record_from).transpose()?)
        })
    }

    fn next_due_time(&self, endpoint: &str) -> Result<Option<u64>, OutboxError> {
        let endpoint = endpoint.to_string();
        self.run(move |c| {
            let row = c.query_one_p(
                "SELECT MIN(next_attempt_ms) FROM botbox_messages WHERE endpoint = $1 AND state = 'queued'",
                &[&endpoint],
            )?;
            Ok(row.get::<_, Option<i64>>(0).map(|v| v as u64))
        })
    }

    fn mark_sending(&self, id: &str) -> Result<(), OutboxError> {
        // `next_due` claimed it already; this renews the claim.
        let id = id.to_string();
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        self.run(move |c| {
            // A lease renewal lost to a server crash only shortens the lease.
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            tx.execute_p(
                "UPDATE botbox_messages SET state = 'sending', lease_until = clock_timestamp() + make_interval(secs => $3),
                        delivery_attempts = delivery_attempts + 1
                 WHERE id = $1 AND claimed_by = $2",
                &[&id, &host, &lease],
            )?;
            tx.commit()
        })
    }

    fn save_plan(&self, id: &str, parts: &[Part], absorbed: &[String]) -> Result<(), OutboxError> {
        let parts = parts.to_vec();
        let id = id.to_string();
        let absorbed = absorbed.to_vec();
        self.run_checked(move |c| {
            let mut tx = c.transaction()?;
            // Dropping the transaction on an error rolls it back.
            write_plan(&mut tx, &id, &parts, &absorbed)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn save_plans(&self, plans: &[super::Plan]) -> Vec<Result<(), OutboxError>> {
        let owned = plans.to_vec();
        let count = plans.len();
        let saved = self.run_checked(move |c| {
            // One transaction, so one round of BEGIN, COMMIT and WAL flush
            // for all; each plan in a savepoint (a nested transaction), so
            // a refused one leaves nothing and the others still commit.
            let mut tx = c.transaction()?;
            let mut answers = Vec::with_capacity(owned.len());
            for plan in &owned {
                let mut sp = tx.transaction()?;
                match write_plan(&mut sp, &plan.id, &plan.parts, &plan.absorbed) {
                    Ok(()) => {
                        sp.commit()?;
                        answers.push(Ok(()));
                    }
                    // Dropping the savepoint rolls back to it.
                    Err(PgFailure::Other(e)) => answers.push(Err(e)),
                    Err(PgFailure::Db(e)) => {
                        answers.push(Err(OutboxError::Postgres(e.to_string())))
                    }
                }
            }
            tx.commit()?;
            Ok(answers)
        });
        super::plan_answers(saved, count)
    }

    fn mergeable(
        &self,
        endpoint: &str,
        channel: &str,
        now_ms: u64,
        except: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        let (endpoint, channel, except) = (
            endpoint.to_string(),
            channel.to_string(),
            except.to_string(),
        );
        self.run_checked(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM botbox_messages
                 WHERE endpoint = $1 AND channel = $2 AND state = 'queued' AND NOT planned
                   AND next_attempt_ms <= $3 AND id != $4
                 ORDER BY created_ms, id LIMIT $5"
            );
            let rows = c.query_p(
                &sql,
                &[
                    &endpoint,
                    &channel,
                    &(now_ms as i64),
                    &except,
                    &(limit as i64),
                ],
            )?;
            Ok(records(rows)?)
        })
    }

    fn members(&self, id: &str) -> Result<Vec<OutboxRecord>, OutboxError> {
        let id = id.to_string();
        self.run_checked(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM botbox_messages WHERE merged_into = $1 ORDER BY created_ms, id"
            );
            Ok(records(c.query_p(&sql, &[&id])?)?)
        })
    }

    fn parts(&self, id: &str) -> Result<Vec<PartRecord>, OutboxError> {
        let id = id.to_string();
        self.run_checked(move |c| {
            let rows = c.query_p(
                &format!(
                    "SELECT {PART_COLUMNS} FROM botbox_parts WHERE message_id = $1 ORDER BY idx"
                ),
                &[&id],
            )?;
            let parts = rows.iter().map(part_row).collect::<Result<Vec<_>, _>>()?;
            if parts.is_empty() {
                return Ok(Vec::new());
            }
            let owner = c
                .query_opt_p("SELECT message FROM botbox_messages WHERE id = $1", &[&id])?
                .map(|r| r.get(0));
            // A part names the messages merged into it; they are these.
            let members = c
                .query_p(
                    "SELECT id, message FROM botbox_messages WHERE merged_into = $1",
                    &[&id],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok(decode_parts(&id, parts, owner, members)?)
        })
    }

    fn part_requested(&self, id: &str, index: u32) -> Result<(), OutboxError> {
        let id = id.to_string();
        self.run(move |c| {
            // Only a count for the listing: a crash may lose it, as it may
            // a lease renewal.
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            tx.execute_p(
                "UPDATE botbox_parts SET requests = requests + 1 WHERE message_id = $1 AND idx = $2",
                &[&id, &(index as i32)],
            )?;
            tx.commit()
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
        let id = id.to_string();
        let error = error.map(str::to_string);
        self.run(move |c| {
            c.execute_p(
                "UPDATE botbox_parts SET state = $3, provider_ids = $4, last_error = $5 WHERE message_id = $1 AND idx = $2",
                &[&id, &(index as i32), &state.as_str(), &ids, &error],
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
        let (id, error) = (id.to_string(), error.to_string());
        let host = self.host_id.clone();
        self.run(move |c| {
            // Only the holder gives a message back; a host that lost its
            // claim must not undo the new holder's work.
            c.execute_p(
                "UPDATE botbox_messages SET state = 'queued', next_attempt_ms = $2, attempts = $3, last_error = $4,
                        claimed_by = NULL, lease_until = NULL
                 WHERE id = $1 AND (claimed_by = $5 OR claimed_by IS NULL)",
                &[
                    &id,
                    &(next_attempt_ms as i64),
                    &(attempts as i32),
                    &error,
                    &host,
                ],
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
        let id = id.to_string();
        let error = error.map(str::to_string);
        let host = self.host_id.clone();
        self.run(move |c| {
            // claimed_by stays: the host that finished a message reports it.
            c.execute_p(
                "UPDATE botbox_messages SET state = $2, attempts = $3, finished_ms = $4, finished_at = clock_timestamp(),
                        last_error = COALESCE($5, last_error), reported = FALSE, claimed_by = $6, lease_until = NULL
                 WHERE id = $1 OR (merged_into = $1 AND state = 'merged')",
                &[
                    &id,
                    &state.as_str(),
                    &(attempts as i32),
                    &(finished_ms as i64),
                    &error,
                    &host,
                ],
            )?;
            Ok(())
        })
    }

    fn recover(&self) -> Result<usize, OutboxError> {
        // Other hosts may be sending right now: a dead host's claims come
        // back through their leases, not through a restart.
        Ok(0)
    }

    fn get(&self, id: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        let id = id.to_string();
        self.run_checked(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM botbox_messages WHERE id = $1");
            Ok(c.query_opt_p(&sql, &[&id])?
                .as_ref()
                .map(record_from)
                .transpose()?)
        })
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<OutboxRecord>, OutboxError> {
        let state = f.state.map(|s| s.as_str().to_string());
        let (plugin, channel) = (f.plugin.clone(), f.channel.clone());
        let limit = f.limit.max(1) as i64;
        self.run_checked(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM botbox_messages
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR plugin = $2) AND ($3::text IS NULL OR channel = $3)
                 ORDER BY created_ms DESC, id DESC LIMIT $4"
            );
            Ok(records(c.query_p(&sql, &[&state, &plugin, &channel, &limit])?)?)
        })
    }

    fn list_progress(&self, f: &ListFilter) -> Result<Vec<ListedMessage>, OutboxError> {
        let state = f.state.map(|s| s.as_str().to_string());
        let (plugin, channel) = (f.plugin.clone(), f.channel.clone());
        let limit = f.limit.max(1) as i64;
        self.run_checked(move |c| {
            // One snapshot for both reads, so parts match their messages.
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let sql = format!(
                "SELECT {COLUMNS}, {LISTED_COLUMNS} FROM botbox_messages
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR plugin = $2) AND ($3::text IS NULL OR channel = $3)
                 ORDER BY created_ms DESC, id DESC LIMIT $4"
            );
            let mut listed = tx
                .query_p(&sql, &[&state, &plugin, &channel, &limit])?
                .iter()
                .map(listed_from)
                .collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<String> = listed.iter().map(|m| m.record.id.clone()).collect();
            let parts = tx
                .query_p(
                    &format!(
                        "SELECT {PROGRESS_COLUMNS} FROM botbox_parts WHERE message_id = ANY($1) ORDER BY message_id, idx"
                    ),
                    &[&ids],
                )?
                .iter()
                .map(progress_row)
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            attach_parts(&mut listed, parts);
            Ok(listed)
        })
    }

    fn cancel(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError> {
        let id = id.to_string();
        self.run(move |c| {
            Ok(c.execute_p(
                "UPDATE botbox_messages SET state = 'cancelled', finished_ms = $2, finished_at = clock_timestamp(), reported = FALSE
                 WHERE (id = $1 AND state = 'queued') OR (merged_into = $1 AND state = 'merged')",
                &[&id, &(now_ms as i64)],
            )? >= 1)
        })
    }

    fn retry(&self, id: &str, now_ms: u64) -> Result<bool, OutboxError> {
        let id = id.to_string();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute_p(
                "UPDATE botbox_messages SET state = 'queued', next_attempt_ms = $2, attempts = 0, finished_ms = NULL,
                        finished_at = NULL, reported = FALSE, claimed_by = NULL, lease_until = NULL
                 WHERE id = $1 AND state IN ('failed', 'partial', 'cancelled')",
                &[&id, &(now_ms as i64)],
            )?;
            tx.execute_p(
                "UPDATE botbox_parts SET state = 'queued' WHERE message_id = $1 AND state = 'failed'",
                &[&id],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn unreported(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        self.run_checked(move |c| {
            // Each host reports what it finished; what nobody reported
            // within a lease (its host died, or a CLI cancelled it) goes to
            // whichever host looks.
            let sql = format!(
                "SELECT {COLUMNS} FROM botbox_messages
                 WHERE NOT reported AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                   AND (claimed_by = $1 OR finished_at < clock_timestamp() - make_interval(secs => $3))
                 ORDER BY finished_ms LIMIT $2"
            );
            Ok(records(c.query_p(&sql, &[&host, &(limit as i64), &lease])?)?)
        })
    }

    fn unreported_plugins(&self, limit: usize) -> Result<Vec<String>, OutboxError> {
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        self.run(move |c| {
            // Who reports what: as in `unreported`.
            let rows = c.query_p(
                "SELECT DISTINCT plugin FROM botbox_messages
                 WHERE NOT reported AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                   AND (claimed_by = $1 OR finished_at < clock_timestamp() - make_interval(secs => $3))
                 ORDER BY plugin LIMIT $2",
                &[&host, &(limit as i64), &lease],
            )?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn unreported_of(&self, plugin: &str, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        let plugin = plugin.to_string();
        self.run_checked(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM botbox_messages
                 WHERE NOT reported AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                   AND (claimed_by = $1 OR finished_at < clock_timestamp() - make_interval(secs => $3))
                   AND plugin = $4
                 ORDER BY finished_ms, id LIMIT $2"
            );
            Ok(records(c.query_p(
                &sql,
                &[&host, &(limit as i64), &lease, &plugin],
            )?)?)
        })
    }

    fn pending_by_plugin(&self, endpoint: &str) -> Result<Vec<PluginBacklog>, OutboxError> {
        let endpoint = endpoint.to_string();
        self.run(move |c| {
            let rows = c.query_p(
                "SELECT plugin, COUNT(*), SUM(requests)::bigint FROM botbox_messages WHERE endpoint = $1 AND state IN ('queued', 'sending')
                 GROUP BY plugin",
                &[&endpoint],
            )?;
            Ok(rows
                .iter()
                .map(|r| PluginBacklog {
                    plugin: r.get(0),
                    messages: r.get::<_, i64>(1).max(0) as usize,
                    requests: r.get::<_, i64>(2).max(0) as usize,
                })
                .collect())
        })
    }

    fn mark_reported(&self, id: &str) -> Result<(), OutboxError> {
        let id = id.to_string();
        self.run(move |c| {
            c.execute_p(
                "UPDATE botbox_messages SET reported = TRUE WHERE id = $1",
                &[&id],
            )?;
            Ok(())
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
        let endpoint = endpoint.to_string();
        let after = after_plugin.unwrap_or("").to_string();
        let host = self.host_id.clone();
        let lease = self.lease_secs();
        let claimed = self.run_checked(move |c| {
            // Queued and due, or claimed by a host whose lease ran out.
            let due = "(state = 'queued' AND next_attempt_ms <= $2)
                       OR (state = 'sending' AND lease_until < clock_timestamp())";
            let pick = super::claim::ranked_due("botbox_", due, "$1", "$3", "$6");
            // One statement claims the batch. SKIP LOCKED leaves rows
            // another host is claiming to it; the condition is asked again
            // of each row once it is locked, so a row another host claimed
            // after this statement's snapshot is not taken twice.
            let sql = format!(
                "WITH picked AS (
                    SELECT id FROM botbox_messages
                    WHERE id IN ({pick}) AND ({due})
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE botbox_messages SET state = 'sending', claimed_by = $4,
                        lease_until = clock_timestamp() + make_interval(secs => $5),
                        delivery_attempts = delivery_attempts + 1
                 WHERE id IN (SELECT id FROM picked)
                 RETURNING {COLUMNS}"
            );
            let rows = c.query_p(
                &sql,
                &[
                    &endpoint,
                    &(now_ms as i64),
                    &after,
                    &host,
                    &lease,
                    &(limit as i64),
                ],
            )?;
            Ok(records(rows)?)
        })?;
        Ok(super::claim::in_turns(claimed, after_plugin))
    }

    fn delivered(&self, done: &[super::Delivered]) -> Result<(), OutboxError> {
        if done.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = done.iter().map(|d| d.id.clone()).collect();
        let indexes: Vec<i32> = done.iter().map(|d| d.index as i32).collect();
        let provider_ids = done
            .iter()
            .map(|d| json(&d.provider_ids))
            .collect::<Result<Vec<_>, _>>()?;
        let attempts: Vec<i32> = done.iter().map(|d| d.attempts as i32).collect();
        let finished: Vec<i64> = done.iter().map(|d| d.finished_ms as i64).collect();
        let host = self.host_id.clone();
        self.run(move |c| {
            // One statement, so one round trip and one commit, for every
            // message that ended meanwhile. claimed_by stays, as in
            // `finish`: the host that finished a message reports it.
            c.execute_p(
                "WITH done AS (
                    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::bigint[])
                        AS d(id, idx, provider_ids, attempts, finished_ms)
                 ),
                 parts AS (
                    UPDATE botbox_parts p SET requests = p.requests + 1, state = 'delivered',
                           provider_ids = done.provider_ids, last_error = NULL
                    FROM done WHERE p.message_id = done.id AND p.idx = done.idx
                 ),
                 members AS (
                    UPDATE botbox_messages m SET state = 'delivered', attempts = done.attempts,
                           finished_ms = done.finished_ms, finished_at = clock_timestamp(),
                           reported = FALSE, claimed_by = $6, lease_until = NULL
                    FROM done WHERE m.merged_into = done.id AND m.state = 'merged'
                 )
                 UPDATE botbox_messages m SET state = 'delivered', attempts = done.attempts,
                        finished_ms = done.finished_ms, finished_at = clock_timestamp(),
                        reported = FALSE, claimed_by = $6, lease_until = NULL
                 FROM done WHERE m.id = done.id",
                &[&ids, &indexes, &provider_ids, &attempts, &finished, &host],
            )?;
            Ok(())
        })
    }

    fn prune(&self, before_ms: u64, limit: usize) -> Result<usize, OutboxError> {
        self.run(move |c| {
            // One statement: the batch, its parts and its merged messages
            // go together. SKIP LOCKED leaves a batch another host is
            // pruning (or a row being written) to that host.
            let n = c.execute_p(
                "WITH doomed AS (
                    SELECT id FROM botbox_messages AS m
                    WHERE finished_ms < $1 AND merged_into IS NULL AND reported
                      AND state IN ('delivered', 'partial', 'failed', 'cancelled')
                      AND NOT EXISTS (SELECT 1 FROM botbox_messages AS c WHERE c.merged_into = m.id AND NOT c.reported)
                    ORDER BY finished_ms LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 ),
                 gone_parts AS (DELETE FROM botbox_parts WHERE message_id IN (SELECT id FROM doomed)),
                 gone_members AS (DELETE FROM botbox_messages WHERE merged_into IN (SELECT id FROM doomed))
                 DELETE FROM botbox_messages WHERE id IN (SELECT id FROM doomed)",
                &[&(before_ms as i64), &(limit as i64)],
            )?;
            // Histories nobody sent to for longer than any limit counts
            // back: a keyed history (a group, `endpoint#key`) is made per
            // conversation, so its rows must not outlive its use. Measured
            // on the database's clock; a scaled clock's sends stamp ahead
            // of it and are only ever kept longer.
            c.execute_p(
                &format!(
                    "DELETE FROM botbox_sends WHERE at_ms < {DB_NOW_MS} - $1"
                ),
                &[&(SEND_HISTORY_MS as i64)],
            )?;
            c.execute_p(
                "DELETE FROM botbox_throttles AS t WHERE position('#' IN t.endpoint) > 0
                   AND NOT EXISTS (SELECT 1 FROM botbox_sends AS s WHERE s.endpoint = t.endpoint)",
                &[],
            )?;
            Ok(n as usize)
        })
    }

    /// One round trip within [`READY_DEADLINE`]: the server answers, and
    /// it takes writes (not a standby in recovery, not read-only by
    /// default).
    fn ready(&self) -> Result<(), super::NotReady> {
        let read_only = with_deadline(Instant::now() + READY_DEADLINE, || {
            self.run(|c| {
                let row = c.query_one_p(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                    &[],
                )?;
                Ok(row.get::<_, bool>(0))
            })
        })
        .map_err(|e| super::NotReady::Unreachable(e.to_string()))?;
        if read_only {
            return Err(super::NotReady::NotWritable(
                "PostgreSQL takes no writes (a standby in recovery, or default_transaction_read_only is on); point `storage.postgres_url` at the primary".into(),
            ));
        }
        Ok(())
    }
}
