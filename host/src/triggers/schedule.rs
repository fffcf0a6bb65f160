//! Fires each plugin's granted schedules.
//!
//! Missed ticks are skipped, not replayed: a tick missed while the host was
//! down or while the previous tick's event was still running does not fire
//! late in a burst. A bot that must catch up (say, a reminder) keeps its own
//! "last done" time in kv and compares on the next tick.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ScheduleSpec};
use crate::events::event_kind_name;
use crate::router::{self, Refusal};
use crate::runtime::{HandleError, Runtime};
use crate::wit::types::Event;

/// Starts one task per (plugin, granted schedule). They stop when `stop` is
/// cancelled; each event in flight then finishes.
pub fn start(config: &Config, runtime: Arc<Runtime>, stop: CancellationToken, tasks: &TaskTracker) {
    for (plugin_name, plugin) in &config.plugins {
        for (schedule, spec) in &plugin.schedules {
            let spec = spec.clone();
            let runtime = runtime.clone();
            let stop = stop.clone();
            let plugin_name = plugin_name.clone();
            let schedule = schedule.clone();
            tasks.spawn(async move {
                let mut ticker = match &spec {
                    ScheduleSpec::Every(period) => {
                        let mut t = tokio::time::interval_at(
                            tokio::time::Instant::now() + *period,
                            *period,
                        );
                        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
                        Some(t)
                    }
                    ScheduleSpec::Cron(_) => None,
                };
                loop {
                    let tick = async {
                        match ticker.as_mut() {
                            Some(t) => {
                                t.tick().await;
                            }
                            // Cron: the next occurrence after now, so a tick
                            // missed while an event ran is skipped, too.
                            None => {
                                let now = runtime.wall_clock().now_utc();
                                let wait = spec
                                    .next_after(now)
                                    .and_then(|next| (next - now).to_std().ok())
                                    .unwrap_or(std::time::Duration::from_secs(60));
                                tokio::time::sleep(wait).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick => {}
                    }
                    // Routed at fire time, so a reload that revokes the
                    // schedule takes effect at the next tick.
                    let event = Event::Schedule(schedule.clone());
                    let result = match router::to_plugin(&runtime, &plugin_name, &event) {
                        Ok(loaded) => {
                            let span = tracing::debug_span!(
                                "schedule",
                                plugin = %plugin_name,
                                schedule = %schedule
                            );
                            tracing::Instrument::instrument(
                                runtime.dispatch_to(&loaded, &event),
                                span,
                            )
                            .await
                        }
                        Err(Refusal::NotGranted(kind)) => Err(HandleError::NotGranted {
                            plugin: plugin_name.clone(),
                            kind: event_kind_name(kind),
                        }),
                        Err(Refusal::NotLoaded | Refusal::NotAddressed) => continue,
                    };
                    if let Err(e) = result {
                        tracing::warn!(plugin = %plugin_name, schedule = %schedule, "{e}");
                    }
                }
            });
        }
    }
}
