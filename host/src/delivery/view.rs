//! The endpoints as an operator sees them (`GET /endpoints` and the
//! `/metrics` gauges): each limit's use, the queue per plugin, the next
//! slot and the provider's last refusal. Read-only: nothing here takes a
//! slot, claims a message or changes a throttle.

use std::sync::Mutex;

use super::store::PluginBacklog;
use super::throttle::LimitUsage;
use super::{Delivery, Endpoint};
use crate::providers::DeliveryOutcome;
use crate::sanitize;

/// The last request of an endpoint that the provider did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When its answer came, in the throttle's clock.
    pub at_ms: u64,
    /// `rejected`, `retry-later`, `quota-exhausted` or `credentials-expired`.
    pub outcome: &'static str,
    /// The provider's error code, when it gave one.
    pub code: Option<String>,
    /// What the provider said (escaped, at most [`MAX_REASON_CHARS`]).
    pub reason: String,
}

/// Longest reason kept.
pub const MAX_REASON_CHARS: usize = 300;

/// Where an endpoint keeps its last refusal.
pub(super) type LastRefusal = Mutex<Option<Refusal>>;

impl Endpoint {
    /// Notes a provider's answer to one request: the last refusal is kept.
    pub(super) fn note_answer(&self, outcome: &DeliveryOutcome, at_ms: u64) {
        let (outcome, code, reason) = match outcome {
            DeliveryOutcome::Delivered { .. } => return,
            DeliveryOutcome::Rejected { code, reason } => ("rejected", Some(code.clone()), reason),
            DeliveryOutcome::RetryLater { reason, .. } => ("retry-later", None, reason),
            DeliveryOutcome::Throttled { reason, .. } => ("too-fast", None, reason),
            DeliveryOutcome::QuotaExhausted { reason, .. } => ("quota-exhausted", None, reason),
            DeliveryOutcome::CredentialsExpired { reason } => ("credentials-expired", None, reason),
        };
        let refusal = Refusal {
            at_ms,
            outcome,
            code: code.map(|c| sanitize::for_log(&c, 64)),
            reason: sanitize::for_log(reason, MAX_REASON_CHARS),
        };
        *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
    }

    /// The last refusal, if the provider refused anything since the
    /// config was loaded.
    pub fn last_refusal(&self) -> Option<Refusal> {
        self.last_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One endpoint at a moment.
#[derive(Debug, Clone)]
pub struct EndpointView {
    /// `provider-name/endpoint`.
    pub endpoint: String,
    /// The provider's kind (`easemob`, …).
    pub kind: &'static str,
    /// Each limit of its throttle, in the order configured.
    pub limits: Vec<LimitUsage>,
    /// When the throttle lets the next request go (now, or later).
    pub next_slot_ms: u64,
    /// When its next queued message falls due, if one is queued.
    pub next_due_ms: Option<u64>,
    /// Messages waiting on it, per plugin.
    pub queue: Vec<PluginBacklog>,
    /// The provider's last refusal.
    pub last_refusal: Option<Refusal>,
    /// What could not be read (the store's error), if anything.
    pub unreadable: Option<String>,
}

/// Every endpoint of a delivery engine at one moment.
#[derive(Debug, Clone)]
pub struct EndpointsNow {
    /// The moment, in the throttle's clock (Unix ms in real time).
    pub now_ms: u64,
    /// The endpoints, by name.
    pub endpoints: Vec<EndpointView>,
}

impl Delivery {
    /// Every endpoint's limits, queue, next slot and last refusal now.
    /// Blocks on the stores: call it off the async workers.
    pub fn endpoints_now(&self) -> EndpointsNow {
        let now_ms = self.clock.now_ms();
        let endpoints = self
            .endpoints
            .values()
            .map(|endpoint| {
                let mut unreadable = Vec::new();
                let throttle = self
                    .throttles
                    .state_at(&endpoint.throttle, now_ms)
                    .map_err(|e| unreadable.push(format!("throttle: {e}")))
                    .ok();
                let queue = self
                    .outbox
                    .pending_by_plugin(&endpoint.key)
                    .map_err(|e| unreadable.push(format!("queue: {e}")))
                    .unwrap_or_default();
                let next_due_ms = self
                    .outbox
                    .next_due_time(&endpoint.key)
                    .map_err(|e| unreadable.push(format!("next due: {e}")))
                    .ok()
                    .flatten();
                EndpointView {
                    endpoint: endpoint.key.clone(),
                    kind: endpoint.provider.kind(),
                    limits: throttle
                        .as_ref()
                        .map(|t| t.usage(now_ms))
                        .unwrap_or_default(),
                    next_slot_ms: throttle.as_ref().map_or(now_ms, |t| t.next_allowed(now_ms)),
                    next_due_ms,
                    queue,
                    last_refusal: endpoint.last_refusal(),
                    unreadable: (!unreadable.is_empty()).then(|| unreadable.join("; ")),
                }
            })
            .collect();
        EndpointsNow { now_ms, endpoints }
    }
}
