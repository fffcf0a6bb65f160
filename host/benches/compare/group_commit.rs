//! Durable accepts with group commit (issue 19, target 2): the outbox
//! store's own insert, on SQLite in WAL mode with `synchronous=FULL`, from
//! one sender and from 64 at once, each beside the same load on the
//! one-transaction-and-fsync-each path every accept took before
//! ([`SqliteOutbox::insert_alone`]), in the same run.
//!
//! The same 64 senders on PostgreSQL (one multi-row `INSERT` per batch)
//! beside one `INSERT` each follow.
//!
//! The senders are threads, as the accept path's callers are (it runs on
//! the blocking pool); what is timed is every accept from the first to the
//! last answer, each answered only once its row was committed.

use std::sync::Arc;
use std::time::Instant;

use botbox::config::Secret;
use botbox::delivery::store::{
    Inserted, MessageState, OutboxError, OutboxRecord, OutboxStore, PgOutbox, SqliteOutbox,
};
use botbox::wit::types::{Content, Message};

use crate::report::Report;

fn record(sender: usize, i: usize) -> OutboxRecord {
    OutboxRecord {
        id: format!("m-{sender}-{i}"),
        plugin: format!("bot-{}", sender % 16),
        channel: "lobby".into(),
        endpoint: "console/default".into(),
        message: Message {
            channel: "lobby".into(),
            content: Content::Text(format!("message {i} from sender {sender}")),
            sender: None,
            extra: None,
            idempotency_key: None,
            reply_to: None,
            options: None,
        },
        state: MessageState::Queued,
        created_ms: i as u64,
        next_attempt_ms: i as u64,
        attempts: 0,
        planned: false,
        last_error: None,
        finished_ms: None,
        traceparent: None,
    }
}

/// A store with both ways to accept.
trait Accepts: OutboxStore {
    /// One transaction (and flush) for this message alone.
    fn alone(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError>;
}

impl Accepts for SqliteOutbox {
    fn alone(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.insert_alone(r, 1)
    }
}

impl Accepts for PgOutbox {
    fn alone(&self, r: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.insert_alone(r, 1)
    }
}

/// Where a load's fresh outbox is.
enum Backend<'a> {
    Sqlite,
    Postgres(&'a crate::pg::PgServer),
}

/// What one load gave: accepts per second, and each accept's latency.
struct Load {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `senders` threads accept `per_sender` messages each into a fresh
/// outbox, through the group commit or one transaction each.
fn load(backend: &Backend<'_>, senders: usize, per_sender: usize, grouped: bool) -> Load {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Accepts> = match backend {
        Backend::Sqlite => {
            Arc::new(SqliteOutbox::open(&dir.path().join("outbox.sqlite")).expect("outbox"))
        }
        Backend::Postgres(server) => {
            let _ = server.client().batch_execute(
                "DROP TABLE IF EXISTS botbox_messages, botbox_parts, botbox_sends, botbox_throttles, botbox_clock",
            );
            Arc::new(
                PgOutbox::open(
                    &Secret::new(server.url()),
                    std::time::Duration::from_secs(30),
                )
                .expect("shared outbox"),
            )
        }
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|s| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..per_sender)
                    .map(|i| {
                        let r = record(s, i);
                        let t = Instant::now();
                        let answer = if grouped {
                            store.insert(&r)
                        } else {
                            store.alone(&r)
                        };
                        assert_eq!(answer.expect("accepted"), Inserted::New);
                        t.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let mut latencies: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("sender"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    // Every answer is a row.
    let rows = store
        .list(&botbox::delivery::store::ListFilter {
            limit: 10_000_000,
            ..Default::default()
        })
        .expect("list")
        .len();
    assert_eq!(
        rows,
        senders * per_sender,
        "an accept answered without its row"
    );
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Load {
        per_second: (senders * per_sender) as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

pub fn run(report: &mut Report, quick: bool) {
    let (lone, each) = if quick { (200, 20) } else { (3000, 300) };
    let sqlite = Backend::Sqlite;
    let today = load(&sqlite, 1, lone, false);
    let grouped = load(&sqlite, 1, lone, true);
    report.add(
        "outbox",
        "durable accepts, 1 sender (group commit)",
        grouped.per_second,
        "accepts/s",
        format!(
            "p50 {:.3} ms, p99 {:.3} ms; one transaction each, same run: {:.0}/s, p50 {:.3} ms ({:.2}x the latency)",
            grouped.p50_ms,
            grouped.p99_ms,
            today.per_second,
            today.p50_ms,
            grouped.p50_ms / today.p50_ms
        ),
    );
    // "No worse than today" within the noise of one shared machine.
    report.target(
        "p50 ≤ 1.1x one transaction each",
        grouped.p50_ms <= today.p50_ms * 1.1,
    );

    let senders = 64;
    let today = load(&sqlite, senders, each, false);
    let grouped = load(&sqlite, senders, each, true);
    report.add(
        "outbox",
        "durable accepts, 64 concurrent senders (group commit)",
        grouped.per_second,
        "accepts/s",
        format!(
            "{} accepts, p50 {:.2} ms, p99 {:.2} ms; one transaction each, same run: {:.0}/s ({:.1}x), p50 {:.2} ms",
            senders * each,
            grouped.p50_ms,
            grouped.p99_ms,
            today.per_second,
            grouped.per_second / today.per_second,
            today.p50_ms
        ),
    );
    report.target("≥ 50,000/s", grouped.per_second >= 50_000.0);
}

/// The same 64 senders on a durable PostgreSQL on this machine (issue 19,
/// target 4's batched inserts, accept side): one multi-row `INSERT` per
/// batch against one `INSERT` each.
pub fn run_postgres(report: &mut Report, quick: bool) {
    let server = crate::pg::PgServer::start_durable();
    let backend = Backend::Postgres(&server);
    let (senders, each) = (64, if quick { 10 } else { 100 });
    let today = load(&backend, senders, each, false);
    let grouped = load(&backend, senders, each, true);
    report.add(
        "outbox",
        "durable accepts on PostgreSQL, 64 concurrent senders (batched INSERT)",
        grouped.per_second,
        "accepts/s",
        format!(
            "{} accepts, p50 {:.2} ms, p99 {:.2} ms; one INSERT each, same run: {:.0}/s ({:.1}x), p50 {:.2} ms",
            senders * each,
            grouped.p50_ms,
            grouped.p99_ms,
            today.per_second,
            grouped.per_second / today.per_second,
            today.p50_ms
        ),
    );
    report.target("≥ 10,000/s", grouped.per_second >= 10_000.0);
}
