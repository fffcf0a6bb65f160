//! The dispatch benchmark's null provider: an outbox that keeps nothing.
//!
//! Everything `send-broadcast` does before the outbox still runs (grant,
//! validation, provider rules, budget, throttle ETA); only the SQLite write
//! is left out, because it would dominate and is measured on its own (the
//! `outbox` rows). Accepted messages are counted, so the benchmark can check
//! that every event really went through the whole path.

use std::sync::atomic::{AtomicU64, Ordering};

use botbox::delivery::store::{
    Inserted, ListFilter, ListedMessage, MessageState, OutboxError, OutboxRecord, OutboxStore,
    PartRecord, PartState, SendLog,
};
use botbox::providers::Part;

#[derive(Default)]
pub struct NullOutbox {
    pub accepted: AtomicU64,
}

impl SendLog for NullOutbox {
    fn record_send(&self, _endpoint: &str, _at_ms: u64) -> Result<(), OutboxError> {
        Ok(())
    }
    fn sends_since(&self, _endpoint: &str, _since_ms: u64) -> Result<Vec<u64>, OutboxError> {
        Ok(Vec::new())
    }
}

impl OutboxStore for NullOutbox {
    fn ready(&self) -> Result<(), botbox::delivery::store::NotReady> {
        Ok(())
    }
    fn insert(&self, _record: &OutboxRecord) -> Result<Inserted, OutboxError> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Inserted::New)
    }
    fn pending_count(&self, _endpoint: &str) -> Result<usize, OutboxError> {
        Ok(0)
    }
    fn next_due(
        &self,
        _endpoint: &str,
        _now_ms: u64,
        _after_plugin: Option<&str>,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        Ok(None)
    }
    fn next_due_time(&self, _endpoint: &str) -> Result<Option<u64>, OutboxError> {
        Ok(None)
    }
    fn mark_sending(&self, _id: &str) -> Result<(), OutboxError> {
        Ok(())
    }
    fn save_plan(
        &self,
        _id: &str,
        _parts: &[Part],
        _absorbed: &[String],
    ) -> Result<(), OutboxError> {
        Ok(())
    }
    fn mergeable(
        &self,
        _endpoint: &str,
        _channel: &str,
        _now_ms: u64,
        _except: &str,
        _limit: usize,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn members(&self, _id: &str) -> Result<Vec<OutboxRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn parts(&self, _id: &str) -> Result<Vec<PartRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn part_requested(&self, _id: &str, _index: u32) -> Result<(), OutboxError> {
        Ok(())
    }
    fn part_done(
        &self,
        _id: &str,
        _index: u32,
        _state: PartState,
        _provider_ids: &[String],
        _error: Option<&str>,
    ) -> Result<(), OutboxError> {
        Ok(())
    }
    fn requeue(
        &self,
        _id: &str,
        _next_attempt_ms: u64,
        _attempts: u32,
        _error: &str,
    ) -> Result<(), OutboxError> {
        Ok(())
    }
    fn finish(
        &self,
        _id: &str,
        _state: MessageState,
        _attempts: u32,
        _finished_ms: u64,
        _error: Option<&str>,
    ) -> Result<(), OutboxError> {
        Ok(())
    }
    fn recover(&self) -> Result<usize, OutboxError> {
        Ok(0)
    }
    fn get(&self, _id: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        Ok(None)
    }
    fn list(&self, _filter: &ListFilter) -> Result<Vec<OutboxRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn list_progress(&self, _filter: &ListFilter) -> Result<Vec<ListedMessage>, OutboxError> {
        Ok(Vec::new())
    }
    fn cancel(&self, _id: &str, _now_ms: u64) -> Result<bool, OutboxError> {
        Ok(false)
    }
    fn retry(&self, _id: &str, _now_ms: u64) -> Result<bool, OutboxError> {
        Ok(false)
    }
    fn unreported(&self, _limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn unreported_plugins(&self, _limit: usize) -> Result<Vec<String>, OutboxError> {
        Ok(Vec::new())
    }
    fn unreported_of(
        &self,
        _plugin: &str,
        _limit: usize,
    ) -> Result<Vec<OutboxRecord>, OutboxError> {
        Ok(Vec::new())
    }
    fn pending_by_plugin(
        &self,
        _endpoint: &str,
    ) -> Result<Vec<botbox::delivery::store::PluginBacklog>, OutboxError> {
        Ok(Vec::new())
    }
    fn mark_reported(&self, _id: &str) -> Result<(), OutboxError> {
        Ok(())
    }
    fn prune(&self, _before_ms: u64, _limit: usize) -> Result<usize, OutboxError> {
        Ok(0)
    }
}
