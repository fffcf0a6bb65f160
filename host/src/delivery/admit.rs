//! The accept path: the last step of `send-broadcast`. It admits the
//! message onto its endpoint's backlog fairly between plugins, asks the
//! throttle store when it could go out, refuses it if that is past the
//! channel's `max_delay`, and otherwise writes it to the outbox and returns
//! the receipt. This is on the path of every broadcast: it stays cheap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::store::{Inserted, MessageState, OutboxError, OutboxRecord, PluginBacklog};
use super::{Accepted, Channel, Delivery};
use crate::wit::types::{BroadcastError, Message, Receipt};

/// The most messages an endpoint holds waiting before `send-broadcast`
/// answers `backlog-full`.
pub const MAX_BACKLOG: usize = 1000;

/// The most provider requests an endpoint's waiting messages may take
/// (a message to ten Bitrix24 dialogs takes ten): past this, `backlog-full`.
pub const MAX_BACKLOG_REQUESTS: usize = 10 * MAX_BACKLOG;

/// Admission of plugin `plugin`'s next message, which takes `requests`
/// provider requests, onto an endpoint where `backlog` waits. Returns how
/// many requests go out before the message's last one, which is what the
/// throttle's estimate counts.
///
/// Fair between plugins (max-min): the endpoint's worker takes plugins in
/// turn, one message each, so the plugin's k-th waiting message goes after
/// at most k of each neighbour's, not after a neighbour's whole backlog: a
/// plugin that floods an endpoint does not push a neighbour's estimate (or
/// its `quota-exhausted`) back. The backlog of [`MAX_BACKLOG`] messages is
/// shared the same way: a plugin may fill what its neighbours leave idle,
/// but once it is full each plugin with messages waiting may still bring
/// its fair share (an equal part), up to twice [`MAX_BACKLOG`] in all.
pub fn admission(
    plugin: &str,
    backlog: &[PluginBacklog],
    requests: usize,
) -> Result<usize, BroadcastError> {
    let own = backlog.iter().find(|b| b.plugin == plugin);
    let (own_messages, own_requests) = own.map_or((0, 0), |b| (b.messages, b.requests));
    let total: usize = backlog.iter().map(|b| b.messages).sum();
    let active = 1 + backlog
        .iter()
        .filter(|b| b.plugin != plugin && b.messages > 0)
        .count();
    let share = MAX_BACKLOG / active;
    let idle = total < MAX_BACKLOG;
    if own_messages >= MAX_BACKLOG || total >= 2 * MAX_BACKLOG || (!idle && own_messages >= share) {
        return Err(BroadcastError::BacklogFull);
    }
    // The new message is the plugin's k-th; each neighbour sends at most k
    // of its messages (at their average cost) before it.
    let k = own_messages + 1;
    let neighbours: usize = backlog
        .iter()
        .filter(|b| b.plugin != plugin && b.messages > 0)
        .map(|b| (b.requests * k.min(b.messages)).div_ceil(b.messages))
        .sum();
    let position = neighbours + own_requests + requests;
    if position > MAX_BACKLOG_REQUESTS {
        return Err(BroadcastError::BacklogFull);
    }
    Ok(position)
}

fn internal(e: OutboxError) -> BroadcastError {
    BroadcastError::Internal(format!(
        "the message was not accepted, because the outbox could not store it: {e}"
    ))
}

/// Numbers this process's accepts. The outbox sends a channel's messages
/// in the order of their accept millisecond, then their id, so the ids of
/// one millisecond must sort in the order they were accepted; the random
/// part that follows keeps two hosts' ids apart.
static ACCEPTS: AtomicU64 = AtomicU64::new(0);

impl Delivery {
    fn new_id(&self, now_ms: u64) -> String {
        // 12 hex digits: the same width for 2^48 accepts, so ids compare
        // as their numbers do.
        let seq = ACCEPTS.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        let random: u32 = rand::rng().random();
        format!("m{now_ms:x}-{seq:012x}{random:08x}")
    }

    /// Persists a checked message and returns its receipt, or refuses it
    /// when it could not go out within the channel's `max_delay`.
    pub fn accept(
        &self,
        plugin: &str,
        channel: &Arc<Channel>,
        mut message: Message,
    ) -> Result<Receipt, BroadcastError> {
        let span = tracing::debug_span!(
            "outbox accept",
            plugin,
            channel = %channel.name,
            receipt = tracing::field::Empty
        );
        let _accepting = span.enter();
        if message.sender.is_none() {
            message.sender = channel.config.default_sender.clone();
        }
        let endpoint = channel.endpoint_for(&message);
        let now = self.clock.now_ms();
        let requests = channel
            .provider
            .requests(&channel.config, &message)
            .clamp(1, MAX_BACKLOG_REQUESTS);
        let backlog = self
            .outbox
            .pending_by_plugin(&endpoint.key)
            .map_err(internal)?;
        let position = admission(plugin, &backlog, requests)?;
        // An unthrottled endpoint (the console) never waits: no need to ask.
        let eta = if endpoint.throttle.spec.limits.is_empty() {
            now
        } else {
            self.throttles
                .estimate(&endpoint.throttle, position, now)
                .map_err(internal)?
        };
        let wait = eta.saturating_sub(now);
        let max_delay = channel.config.max_delay.as_millis() as u64;
        if wait > max_delay {
            // The plugin hears how long until a message sent then would
            // fit within the channel's max_delay.
            return Err(BroadcastError::QuotaExhausted(wait - max_delay));
        }
        let record = OutboxRecord {
            id: self.new_id(now),
            plugin: plugin.to_string(),
            channel: channel.name.clone(),
            endpoint: endpoint.key.clone(),
            message,
            state: MessageState::Queued,
            created_ms: now,
            next_attempt_ms: now,
            attempts: 0,
            planned: false,
            last_error: None,
            finished_ms: None,
            traceparent: crate::telemetry::traceparent(),
        };
        let receipt = match self
            .outbox
            .insert_costed(&record, requests as u32)
            .map_err(internal)?
        {
            Inserted::Duplicate(id) => {
                return Ok(Receipt { id, eta_ms: 0 });
            }
            Inserted::New => Receipt {
                id: record.id,
                eta_ms: wait,
            },
        };
        span.record("receipt", receipt.id.as_str());
        self.committed(endpoint);
        // Copies for listeners only when there are any: this is on the path
        // of every broadcast.
        if self.observers.accepted.receiver_count() > 0 {
            let _ = self.observers.accepted.send(Accepted {
                plugin: plugin.to_string(),
                channel: channel.name.clone(),
                receipt: receipt.clone(),
                message: record.message,
            });
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(plugin: &str, messages: usize, requests: usize) -> PluginBacklog {
        PluginBacklog {
            plugin: plugin.into(),
            messages,
            requests,
        }
    }

    #[test]
    fn admission_counts_requests_and_only_a_neighbours_turns() {
        // Alone: behind its own requests.
        assert_eq!(admission("a", &[b("a", 3, 30)], 10), Ok(40));
        // A flood of 500 ahead: the newcomer's first message waits one turn.
        assert_eq!(admission("b", &[b("a", 500, 500)], 1), Ok(2));
        // Its third waits three of the flood's, at their average cost.
        assert_eq!(admission("b", &[b("a", 500, 1000), b("b", 2, 2)], 1), Ok(9));
        // A neighbour with fewer messages than k counts all of them.
        assert_eq!(admission("b", &[b("a", 1, 7), b("b", 5, 5)], 1), Ok(13));
    }

    #[test]
    fn a_full_backlog_leaves_each_plugin_its_share() {
        let full = [b("a", MAX_BACKLOG, MAX_BACKLOG)];
        assert_eq!(admission("a", &full, 1), Err(BroadcastError::BacklogFull));
        assert!(admission("b", &full, 1).is_ok());
        let half = [
            b("a", MAX_BACKLOG, MAX_BACKLOG),
            b("b", MAX_BACKLOG / 2, 500),
        ];
        assert_eq!(admission("b", &half, 1), Err(BroadcastError::BacklogFull));
        assert!(admission("c", &half, 1).is_ok());
        // Requests are bounded too.
        let heavy = [b("a", 10, MAX_BACKLOG_REQUESTS)];
        assert_eq!(admission("a", &heavy, 1), Err(BroadcastError::BacklogFull));
    }
}
