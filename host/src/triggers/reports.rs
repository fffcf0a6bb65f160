//! Delivery reports: each finished message goes back to the plugin that
//! sent it as a `delivery` event.
//!
//! The outbox's `reported` flag is the source of truth, so a report owed
//! when the host stopped is sent after the restart. A plugin that was not
//! granted delivery events (or is no longer loaded) is skipped, and the
//! report is marked done so it is not retried forever.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::delivery::outbox::{MessageState, OutboxRecord};
use crate::runtime::Runtime;
use crate::wit::types::{DeliveryOutcome, DeliveryReport, Event, EventKind};

pub fn report_event(record: &OutboxRecord, parts_ids: Vec<String>) -> Event {
    let detail = record.last_error.clone().unwrap_or_default();
    let outcome = match record.state {
        MessageState::Delivered => DeliveryOutcome::Delivered,
        MessageState::Partial => DeliveryOutcome::PartiallyDelivered(detail),
        MessageState::Cancelled => DeliveryOutcome::Cancelled,
        _ => DeliveryOutcome::Failed(detail),
    };
    Event::Delivery(DeliveryReport {
        receipt_id: record.id.clone(),
        channel: record.channel.clone(),
        outcome,
        attempts: record.attempts,
        provider_ids: parts_ids,
    })
}

pub async fn run(delivery: Arc<Delivery>, runtime: Arc<Runtime>, stop: CancellationToken) {
    loop {
        let batch = match delivery.outbox().unreported(100) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot read delivery reports: {e}");
                Vec::new()
            }
        };
        for record in &batch {
            let ids = delivery
                .outbox()
                .parts(&record.id)
                .map(|parts| parts.into_iter().flat_map(|p| p.provider_ids).collect())
                .unwrap_or_default();
            if let Some(plugin) = runtime.plugin(&record.plugin)
                && plugin.context.grants.allows_event(EventKind::Delivery)
                && let Err(e) = runtime
                    .dispatch_to(&plugin, &report_event(record, ids))
                    .await
            {
                tracing::warn!(plugin = %record.plugin, receipt = %record.id, "delivery report not handled: {e}");
            }
            if let Err(e) = delivery.outbox().mark_reported(&record.id) {
                tracing::error!("cannot mark report {}: {e}", record.id);
            }
        }
        if batch.len() == 100 {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = delivery.reports.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
