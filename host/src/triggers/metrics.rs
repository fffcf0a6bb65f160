//! Counters the admin listener exposes in the Prometheus text format.
//! Per-plugin call counts and latencies live in each plugin's
//! [`crate::runtime::PluginStats`]; this holds the rest: inbound webhooks,
//! broadcasts by provider and outcome, throttle waits and reloads.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::{LATENCY_BUCKETS_MS, Runtime};

/// Picks one counter out of a plugin's stats.
type StatField = fn(&crate::runtime::PluginStats) -> &AtomicU64;

#[derive(Default)]
pub struct Metrics {
    /// (provider, outcome) → calls.
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    /// (provider kind, outcome) → finished messages.
    broadcasts: Mutex<BTreeMap<(String, String), u64>>,
    /// Messages accepted with a throttle wait, and the total wait.
    pub throttle_waits: AtomicU64,
    pub throttle_wait_ms: AtomicU64,
    /// (`plugin` or `config`, `ok` or `refused`) → reloads.
    reloads: Mutex<BTreeMap<(String, String), u64>>,
}

fn bump(map: &Mutex<BTreeMap<(String, String), u64>>, a: &str, b: &str) {
    let mut m = match map.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    // Bounded: provider names come from the config, outcomes from the host.
    if m.len() < 10_000 {
        *m.entry((a.to_string(), b.to_string())).or_default() += 1;
    }
}

impl Metrics {
    pub fn webhook(&self, provider: &str, outcome: &str) {
        bump(&self.webhooks, provider, outcome);
    }

    pub fn broadcast(&self, provider: &str, outcome: &str) {
        bump(&self.broadcasts, provider, outcome);
    }

    pub fn reload(&self, kind: &str, outcome: &str) {
        bump(&self.reloads, kind, outcome);
    }

    pub fn webhook_count(&self, provider: &str, outcome: &str) -> u64 {
        self.webhooks
            .lock()
            .ok()
            .and_then(|m| m.get(&(provider.to_string(), outcome.to_string())).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, runtime: &Runtime) -> String {
        let mut out = String::new();
        let pairs = |out: &mut String,
                     name: &str,
                     help: &str,
                     labels: (&str, &str),
                     map: &Mutex<BTreeMap<(String, String), u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = map.lock() {
                for ((a, b), v) in m.iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{{}=\"{}\",{}=\"{}\"}} {v}",
                        labels.0,
                        escape(a),
                        labels.1,
                        escape(b)
                    );
                }
            }
        };
        pairs(
            &mut out,
            "botbox_webhook_calls_total",
            "Inbound provider callbacks by outcome.",
            ("provider", "outcome"),
            &self.webhooks,
        );
        pairs(
            &mut out,
            "botbox_broadcasts_total",
            "Finished messages by provider kind and outcome.",
            ("provider", "outcome"),
            &self.broadcasts,
        );
        let _ = writeln!(
            out,
            "# HELP botbox_throttle_waits_total Messages accepted to wait for a provider throttle.\n# TYPE botbox_throttle_waits_total counter\nbotbox_throttle_waits_total {}",
            self.throttle_waits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP botbox_throttle_wait_ms_total Total expected throttle wait of accepted messages, in ms.\n# TYPE botbox_throttle_wait_ms_total counter\nbotbox_throttle_wait_ms_total {}",
            self.throttle_wait_ms.load(Ordering::Relaxed)
        );
        pairs(
            &mut out,
            "botbox_reloads_total",
            "Live reloads of a plugin or the config, applied or refused.",
            ("kind", "outcome"),
            &self.reloads,
        );

        let plugins: Vec<_> = runtime
            .plugin_names()
            .into_iter()
            .filter_map(|n| runtime.plugin(&n))
            .collect();
        let counters: [(&str, &str, StatField); 6] = [
            (
                "botbox_events_handled_total",
                "Events a plugin handled.",
                |s| &s.handled,
            ),
            (
                "botbox_events_failed_total",
                "Events a plugin returned an error for.",
                |s| &s.failed,
            ),
            ("botbox_traps_total", "Events that trapped.", |s| &s.traps),
            (
                "botbox_timeouts_total",
                "Events stopped at their deadline.",
                |s| &s.timeouts,
            ),
            (
                "botbox_out_of_memory_total",
                "Events stopped at their memory cap.",
                |s| &s.out_of_memory,
            ),
            (
                "botbox_busy_total",
                "Events refused at the concurrency cap.",
                |s| &s.busy,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for p in &plugins {
                let _ = writeln!(
                    out,
                    "{name}{{plugin=\"{}\"}} {}",
                    escape(&p.name),
                    get(&p.stats).load(Ordering::Relaxed)
                );
            }
        }
        let name = "botbox_handle_duration_ms";
        let _ = writeln!(
            out,
            "# HELP {name} Time to run one event in a plugin, in ms.\n# TYPE {name} histogram"
        );
        for p in &plugins {
            let plugin = escape(&p.name);
            let (buckets, count, sum_us) = p.stats.latency.snapshot();
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS_MS.iter().zip(buckets.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{plugin=\"{plugin}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{plugin=\"{plugin}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{plugin=\"{plugin}\"}} {}",
                sum_us as f64 / 1000.0
            );
            let _ = writeln!(out, "{name}_count{{plugin=\"{plugin}\"}} {count}");
        }
        out
    }
}

/// Label values: backslash, quote and newline escaped, as the format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
