//! Group commit for accepts: concurrent inserts share one transaction, so
//! one fsync (SQLite WAL with `synchronous=FULL`, PostgreSQL's WAL flush)
//! stands behind many receipts instead of one.
//!
//! There is no committer thread and no timer. A caller queues its row and,
//! if no batch is being committed, commits at once whatever is queued — its
//! own row alone when it is alone, so a lone sender waits for nothing but
//! its own fsync. While that commit runs, other callers queue behind it;
//! when it ends, one of them commits everything that gathered meanwhile.
//! Each caller returns only once the transaction that holds its row has
//! committed (or failed), so a receipt still means the row is on disk.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{Inserted, OutboxError, OutboxRecord, json};

/// The most rows one transaction takes: bounds the time a batch holds the
/// store, and PostgreSQL's statement parameters (10 per row, 65,535 at
/// most).
pub const MAX_BATCH: usize = 512;

/// A row to insert into `messages`, in the form both backends bind: the
/// message already serialised (by its caller, outside the batch's time).
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub id: String,
    pub plugin: String,
    pub channel: String,
    pub endpoint: String,
    pub message: String,
    pub idempotency_key: Option<String>,
    pub created_ms: i64,
    pub next_attempt_ms: i64,
    /// At least 1.
    pub requests: u32,
    pub traceparent: Option<String>,
}

impl NewRow {
    /// `record` as stored, expected to take `requests` provider requests.
    pub fn of(record: &OutboxRecord, requests: u32) -> Result<NewRow, OutboxError> {
        Ok(NewRow {
            id: record.id.clone(),
            plugin: record.plugin.clone(),
            channel: record.channel.clone(),
            endpoint: record.endpoint.clone(),
            message: json(&record.message)?,
            idempotency_key: record.message.idempotency_key.clone(),
            created_ms: record.created_ms as i64,
            next_attempt_ms: record.next_attempt_ms as i64,
            requests: requests.max(1),
            traceparent: record.traceparent.clone(),
        })
    }
}

/// What one caller of a batch hears.
pub(crate) type Answer = Result<Inserted, OutboxError>;

/// The rows waiting for a commit, and the answers of committed batches not
/// yet picked up by their callers.
struct Queue {
    waiting: Vec<(u64, NewRow)>,
    next_ticket: u64,
    /// Whether a caller is committing a batch now.
    committing: bool,
    answers: HashMap<u64, Answer>,
}

/// The group commit of one store's accepts.
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Signalled when a batch's answers are in, or the commit is free.
    settled: Condvar,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                next_ticket: 0,
                committing: false,
                answers: HashMap::new(),
            }),
            settled: Condvar::new(),
        }
    }
}

/// Hands the batch's answers back even when `commit` panicked, so its
/// followers are not left waiting for ever and the next caller can commit.
struct Settle<'a> {
    group: &'a GroupCommit,
    tickets: Vec<u64>,
    answers: Option<Vec<Answer>>,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let answers = self.answers.take();
        let mut queue = match self.group.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        match answers {
            Some(answers) if answers.len() == self.tickets.len() => {
                queue.answers.extend(self.tickets.drain(..).zip(answers));
            }
            // The commit panicked (or answered the wrong count): nobody may
            // assume their row is stored.
            _ => {
                for ticket in self.tickets.drain(..) {
                    queue.answers.insert(ticket, Err(OutboxError::Poisoned));
                }
            }
        }
        queue.committing = false;
        drop(queue);
        self.group.settled.notify_all();
    }
}

impl GroupCommit {
    fn lock(&self) -> Result<MutexGuard<'_, Queue>, OutboxError> {
        self.queue.lock().map_err(|_| OutboxError::Poisoned)
    }

    /// Inserts `row` together with whatever other callers queue meanwhile:
    /// `commit` stores a batch in one transaction and answers each of its
    /// rows, in order. Returns once the batch holding `row` has committed
    /// or failed. Blocks; call it off the async runtime's threads.
    pub fn insert(
        &self,
        row: NewRow,
        mut commit: impl FnMut(Vec<NewRow>) -> Vec<Answer>,
    ) -> Result<Inserted, OutboxError> {
        let mut queue = self.lock()?;
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push((ticket, row));
        loop {
            if let Some(answer) = queue.answers.remove(&ticket) {
                return answer;
            }
            if !queue.committing && !queue.waiting.is_empty() {
                // Lead: commit what has gathered (our own row among it,
                // unless an earlier leader already took it).
                queue.committing = true;
                let take = queue.waiting.len().min(MAX_BATCH);
                let (tickets, rows): (Vec<u64>, Vec<NewRow>) = queue.waiting.drain(..take).unzip();
                drop(queue);
                let mut settle = Settle {
                    group: self,
                    tickets,
                    answers: None,
                };
                settle.answers = Some(commit(rows));
                drop(settle);
                queue = self.lock()?;
                continue;
            }
            queue = self
                .settled
                .wait(queue)
                .map_err(|_| OutboxError::Poisoned)?;
        }
    }
}

/// A copy of `e` for each caller of a batch that failed as a whole (the
/// error types hold engine errors that cannot be cloned; their text can).
/// Answers each of `records` in order: a record that cannot become a row
/// is refused on its own, and the rest go to `commit` together (which
/// answers each row it was given, in order).
pub(crate) fn answer_each(
    records: &[(&OutboxRecord, u32)],
    commit: impl FnOnce(Vec<NewRow>) -> Vec<Answer>,
) -> Vec<Answer> {
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len());
    for (record, requests) in records {
        match NewRow::of(record, *requests) {
            Ok(row) => {
                rows.push(row);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let mut committed = commit(rows).into_iter();
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| committed.next().unwrap_or(Err(OutboxError::Poisoned))))
        .collect()
}

pub(crate) fn copy_error(e: &OutboxError) -> OutboxError {
    match e {
        OutboxError::Unavailable(s) => OutboxError::Unavailable(s.clone()),
        OutboxError::Conflict(s) => OutboxError::Conflict(s.clone()),
        OutboxError::Corrupt(s) => OutboxError::Corrupt(s.clone()),
        OutboxError::Poisoned => OutboxError::Poisoned,
        OutboxError::Postgres(s) => OutboxError::Postgres(s.clone()),
        other => OutboxError::Postgres(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;

    fn row(id: &str) -> NewRow {
        NewRow {
            id: id.into(),
            plugin: "p".into(),
            channel: "lobby".into(),
            endpoint: "console/default".into(),
            message: "{}".into(),
            idempotency_key: None,
            created_ms: 0,
            next_attempt_ms: 0,
            requests: 1,
            traceparent: None,
        }
    }

    fn queued(group: &GroupCommit) -> usize {
        group.queue.lock().unwrap().waiting.len()
    }

    #[test]
    fn a_lone_caller_commits_its_own_row_at_once() {
        let group = GroupCommit::default();
        let mut batches = Vec::new();
        for id in ["a", "b"] {
            let answer = group.insert(row(id), |rows| {
                batches.push(rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
                rows.iter().map(|_| Ok(Inserted::New)).collect()
            });
            assert_eq!(answer.unwrap(), Inserted::New);
        }
        // Nobody else was there: one batch each, nothing waited for company.
        assert_eq!(batches, [vec!["a"], vec!["b"]]);
    }

    #[test]
    fn callers_arriving_during_a_commit_share_the_next_one_and_hear_their_own_answer() {
        let group = Arc::new(GroupCommit::default());
        let (batch_sizes, sizes) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let commit = {
            let released = released.clone();
            move |rows: Vec<NewRow>| {
                batch_sizes.send(rows.len()).unwrap();
                // The first batch holds the commit until the others queued.
                if rows[0].id == "first" {
                    released.lock().unwrap().recv().unwrap();
                }
                rows.iter()
                    .map(|r| match r.id.as_str() {
                        "bad" => Err(OutboxError::Corrupt("bad row".into())),
                        _ => Ok(Inserted::Duplicate(r.id.clone())),
                    })
                    .collect()
            }
        };
        let first = {
            let (group, commit) = (group.clone(), commit.clone());
            std::thread::spawn(move || group.insert(row("first"), commit))
        };
        assert_eq!(sizes.recv().unwrap(), 1, "the first caller led alone");
        let followers: Vec<_> = ["x", "bad", "y"]
            .into_iter()
            .map(|id| {
                let (group, commit) = (group.clone(), commit.clone());
                std::thread::spawn(move || group.insert(row(id), commit))
            })
            .collect();
        while queued(&group) < 3 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(
            first.join().unwrap().unwrap(),
            Inserted::Duplicate("first".into())
        );
        let answers: Vec<_> = followers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            sizes.recv().unwrap(),
            3,
            "the three who waited shared one batch"
        );
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &Inserted::Duplicate("x".into())
        );
        assert!(matches!(answers[1], Err(OutboxError::Corrupt(_))));
        assert_eq!(
            answers[2].as_ref().unwrap(),
            &Inserted::Duplicate("y".into())
        );
    }

    #[test]
    fn a_commit_that_panics_fails_its_batch_and_frees_the_next() {
        let group = GroupCommit::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.insert(row("a"), |_| panic!("the engine broke"))
        }));
        assert!(panicked.is_err());
        // The panicking leader's answer was settled as a failure, and the
        // commit is free again.
        assert!(
            group
                .queue
                .lock()
                .unwrap()
                .answers
                .values()
                .all(Result::is_err)
        );
        let answer = group.insert(row("b"), |rows| {
            rows.iter().map(|_| Ok(Inserted::New)).collect()
        });
        assert_eq!(answer.unwrap(), Inserted::New);
    }
}
