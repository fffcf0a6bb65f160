//! Delivery reports: each finished message goes back to the plugin that
//! sent it as a `delivery` event.
//!
//! The outbox's `reported` flag is the source of truth, so a report owed
//! when the host stopped is sent after the restart. A plugin that was not
//! granted delivery events (or is no longer loaded) is skipped, and the
//! report is marked done so it is not retried forever.
//!
//! Each plugin's reports go through a task of their own, so a plugin that
//! spins on every report delays only its own; a report that finds its
//! plugin busy waits for it instead of being dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::Delivery;
use crate::delivery::store::{MessageState, OutboxRecord};
use crate::router;
use crate::runtime::{HandleError, Runtime};
use crate::sanitize;
use crate::wit::types::{DeliveryOutcome, DeliveryReport, Event};

/// The `delivery` event that tells a plugin what became of one receipt.
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

/// At most this many plugins' report queues are looked at per pass.
const MAX_PLUGINS: usize = 1000;

/// Reports read from the outbox per plugin at a time.
const BATCH: usize = 100;

/// How long a report waits before it is offered again to a plugin that
/// was busy (at its `max_concurrency`), at first and at most.
const BUSY_RETRY_FIRST: Duration = Duration::from_millis(20);
const BUSY_RETRY_MAX: Duration = Duration::from_secs(1);

/// Finds the plugins with reports waiting and keeps one task per plugin
/// delivering them: a plugin that spends its whole deadline on each report,
/// or is busy, holds up only its own reports.
pub async fn run(delivery: Arc<Delivery>, runtime: Arc<Runtime>, stop: CancellationToken) {
    let tasks = TaskTracker::new();
    let mut queues: HashMap<String, Arc<Notify>> = HashMap::new();
    loop {
        match delivery.outbox().unreported_plugins(MAX_PLUGINS) {
            Ok(plugins) => {
                for plugin in plugins {
                    let wake = queues.entry(plugin.clone()).or_insert_with(|| {
                        let wake = Arc::new(Notify::new());
                        tasks.spawn(run_plugin(
                            delivery.clone(),
                            runtime.clone(),
                            plugin,
                            wake.clone(),
                            stop.clone(),
                        ));
                        wake
                    });
                    // Stores a permit if the task is busy: no wake-up is lost.
                    wake.notify_one();
                }
            }
            Err(e) => tracing::error!("cannot read delivery reports: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = delivery.reports.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Delivers one plugin's reports in the order they finished. A report the
/// plugin was too busy to take waits for it; it is marked done only once
/// the plugin ran it (whether or not its handler succeeded), or when the
/// plugin cannot get it at all (not loaded, or not granted `delivery`).
async fn run_plugin(
    delivery: Arc<Delivery>,
    runtime: Arc<Runtime>,
    plugin_name: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let shown = sanitize::for_log(&plugin_name, 64);
    while !stop.is_cancelled() {
        let batch = match delivery.outbox().unreported_of(&plugin_name, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(plugin = %shown, "cannot read delivery reports: {e}");
                Vec::new()
            }
        };
        for record in &batch {
            let ids = delivery
                .outbox()
                .parts(&record.id)
                .map(|parts| parts.into_iter().flat_map(|p| p.provider_ids).collect())
                .unwrap_or_default();
            let event = report_event(record, ids);
            let mut retry = BUSY_RETRY_FIRST;
            loop {
                // Routed each time: a reload may replace the plugin.
                let Ok(plugin) = router::to_plugin(&runtime, &record.plugin, &event) else {
                    break;
                };
                // The report belongs to the message's trace.
                let span = tracing::debug_span!(
                    "delivery report",
                    plugin = %shown,
                    receipt = %record.id,
                );
                crate::telemetry::continue_from(&span, record.traceparent.as_deref());
                let reported =
                    tracing::Instrument::instrument(runtime.dispatch_to(&plugin, &event), span);
                match reported.await {
                    Ok(()) => break,
                    Err(HandleError::Busy { .. }) => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(BUSY_RETRY_MAX);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %shown, receipt = %record.id, "delivery report not handled: {e}");
                        break;
                    }
                }
            }
            if let Err(e) = delivery.outbox().mark_reported(&record.id) {
                tracing::error!("cannot mark report {}: {e}", record.id);
            }
        }
        if batch.len() == BATCH {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
