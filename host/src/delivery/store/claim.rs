//! What both backends share for the delivery worker's own writes, batched:
//! claiming several due messages in one statement ([`OutboxStore::claim_due`])
//! and ending several delivered messages in one transaction
//! ([`OutboxStore::delivered`]).
//!
//! Before these, a worker wrote each message five times (taken, sending,
//! its part asked, its part answered, finished), each a transaction of its
//! own and, on SQLite with `synchronous=FULL`, an fsync each; on
//! PostgreSQL a round trip each, several of them holding locks. A batch of
//! `n` messages now costs one claim and one end.
//!
//! [`OutboxStore::claim_due`]: super::OutboxStore::claim_due
//! [`OutboxStore::delivered`]: super::OutboxStore::delivered

use std::collections::{BTreeMap, VecDeque};

use super::OutboxRecord;

/// A message whose last open part the provider answered "delivered", with
/// every other part delivered before: what [`OutboxStore::delivered`]
/// writes (the part's request counted, the part delivered, the message and
/// the messages merged into it ended as delivered).
///
/// [`OutboxStore::delivered`]: super::OutboxStore::delivered
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message.
    pub id: String,
    /// Its part that was answered last.
    pub index: u32,
    /// The provider's ids of what that part delivered.
    pub provider_ids: Vec<String>,
    /// Provider requests made for the message, this one included.
    pub attempts: u32,
    /// When it ended.
    pub finished_ms: u64,
}

/// What taking turns reads of a due message: whose it is, and its age
/// (accepted when, then its id, to break ties the same way every time).
pub(crate) trait Turn {
    fn plugin(&self) -> &str;
    fn age(&self) -> (u64, &str);
}

impl Turn for OutboxRecord {
    fn plugin(&self) -> &str {
        &self.plugin
    }
    fn age(&self) -> (u64, &str) {
        (self.created_ms, &self.id)
    }
}

/// Puts claimed records in the order plugins take turns: each plugin's own
/// oldest first, one message per plugin per round, starting with the first
/// plugin (by name) after `after_plugin` — the order `next_due` gives one
/// at a time. PostgreSQL picks the rows with the same rule in SQL, and
/// its batch's rows come back from an `UPDATE … RETURNING` in no set
/// order; SQLite picks them with this from each plugin's oldest.
pub(crate) fn in_turns<T: Turn>(mut records: Vec<T>, after_plugin: Option<&str>) -> Vec<T> {
    records.sort_by(|a, b| a.age().cmp(&b.age()));
    let mut by_plugin: BTreeMap<String, VecDeque<T>> = BTreeMap::new();
    for r in records {
        by_plugin
            .entry(r.plugin().to_string())
            .or_default()
            .push_back(r);
    }
    let after = after_plugin.unwrap_or("");
    // Plugins after the last one served first, then the rest from the top.
    let mut plugins: Vec<String> = by_plugin.keys().cloned().collect();
    plugins.sort_by_key(|p| (p.as_str() <= after, p.clone()));
    let mut out = Vec::new();
    loop {
        let mut took = false;
        for p in &plugins {
            if let Some(r) = by_plugin.get_mut(p).and_then(VecDeque::pop_front) {
                out.push(r);
                took = true;
            }
        }
        if !took {
            return out;
        }
    }
}

/// The SQL that ranks an endpoint's due rows so that a batch of `LIMIT n`
/// gives each plugin its turn: the rank of a row among its plugin's own
/// (oldest first), then plugins after `after_plugin` first. PostgreSQL
/// selects with it (SQLite reads each plugin's oldest instead, see its
/// `claim_due`); `{p}`: the table prefix, `{due}`: the condition a row
/// must meet, `{after}`, `{limit}`: the parameters' placeholders.
pub(crate) fn ranked_due(p: &str, due: &str, endpoint: &str, after: &str, limit: &str) -> String {
    format!(
        "SELECT id FROM (
            SELECT id, plugin, created_ms,
                   ROW_NUMBER() OVER (PARTITION BY plugin ORDER BY created_ms, id) AS turn
            FROM {p}messages WHERE endpoint = {endpoint} AND ({due})
         ) ranked
         ORDER BY turn, (plugin <= {after}), plugin, created_ms, id
         LIMIT {limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::store::MessageState;
    use crate::wit::types::{Content, Message};

    fn record(plugin: &str, id: &str, created_ms: u64) -> OutboxRecord {
        OutboxRecord {
            id: id.into(),
            plugin: plugin.into(),
            channel: "lobby".into(),
            endpoint: "p/e".into(),
            message: Message {
                channel: "lobby".into(),
                content: Content::Text(id.into()),
                sender: None,
                extra: None,
                idempotency_key: None,
                reply_to: None,
                options: None,
            },
            state: MessageState::Sending,
            created_ms,
            next_attempt_ms: created_ms,
            attempts: 0,
            planned: false,
            last_error: None,
            finished_ms: None,
            traceparent: None,
        }
    }

    fn ids(records: &[OutboxRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn plugins_take_turns_oldest_first_after_the_last_served() {
        let claimed = vec![
            record("b", "b2", 5),
            record("a", "a1", 1),
            record("c", "c1", 3),
            record("a", "a2", 2),
            record("b", "b1", 4),
        ];
        assert_eq!(
            ids(&in_turns(claimed.clone(), None)),
            ["a1", "b1", "c1", "a2", "b2"]
        );
        // `a` was served last: `b` and `c` go first.
        assert_eq!(
            ids(&in_turns(claimed, Some("a"))),
            ["b1", "c1", "a1", "b2", "a2"]
        );
    }
}
