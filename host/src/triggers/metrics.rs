//! Counters the admin listener exposes in the Prometheus text format.
//! Per-plugin call counts and latencies live in each plugin's
//! [`crate::runtime::PluginStats`]; this holds the rest: inbound webhooks,
//! broadcasts by provider and outcome, throttle waits and reloads.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::delivery::EndpointsNow;
use crate::delivery::throttle::LimitUsage;
use crate::runtime::{LATENCY_BUCKETS_MS, Runtime};

/// Picks one counter out of a plugin's stats.
type StatField = fn(&crate::runtime::PluginStats) -> &AtomicU64;

/// The counters `/metrics` serves beside the runtime's: inbound webhooks,
/// finished broadcasts, throttle waits and reloads.
#[derive(Default)]
pub struct Metrics {
    /// (provider, outcome) → calls.
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    /// (provider, outcome, plugin) → finished messages.
    broadcasts: Mutex<BTreeMap<(String, String, String), u64>>,
    /// (endpoint, plugin) → how long requests waited for the throttle.
    throttle_waits: Mutex<BTreeMap<(String, String), WaitHistogram>>,
    /// (`plugin` or `config`, `ok` or `refused`) → reloads.
    reloads: Mutex<BTreeMap<(String, String), u64>>,
    /// (provider kind, endpoint) → "too fast" answers and the fraction of
    /// the documented rate allowed after the last one.
    slowdowns: Mutex<BTreeMap<(String, String), (u64, f64)>>,
    /// The last [`RECENT_WEBHOOK_REFUSALS`] webhook refusals, oldest first,
    /// for the web console.
    recent_refusals: Mutex<std::collections::VecDeque<WebhookRefusal>>,
}

/// How many webhook refusals are kept for the console.
pub const RECENT_WEBHOOK_REFUSALS: usize = 100;

/// One refused webhook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRefusal {
    /// When, Unix ms.
    pub at_ms: u64,
    /// The provider name in the URL, escaped and cut (it may be any text).
    pub provider: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The refusal's outcome (`forged`, `stale`, `replay`, …).
    pub outcome: &'static str,
    /// Why, escaped and cut.
    pub reason: String,
}

/// Upper bounds of the throttle-wait histogram, in ms: from "no wait" to a
/// daily quota's hours.
pub const WAIT_BUCKETS_MS: [u64; 9] = [
    1, 10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000,
];

#[derive(Default, Clone)]
struct WaitHistogram {
    buckets: [u64; WAIT_BUCKETS_MS.len()],
    count: u64,
    sum_ms: u64,
}

/// The number of label sets a map keeps, so nothing outside the config and
/// the host can grow it without bound.
const MAX_SERIES: usize = 10_000;

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
    /// Keeps one webhook refusal in the bounded ring the console shows.
    pub fn webhook_refused(&self, refusal: WebhookRefusal) {
        let mut ring = self
            .recent_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ring.len() == RECENT_WEBHOOK_REFUSALS {
            ring.pop_front();
        }
        ring.push_back(refusal);
    }

    /// The webhook refusals kept, oldest first.
    pub fn recent_webhook_refusals(&self) -> Vec<WebhookRefusal> {
        let ring = self
            .recent_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }

    /// Counts one inbound webhook call and how it ended.
    pub fn webhook(&self, provider: &str, outcome: &str) {
        bump(&self.webhooks, provider, outcome);
    }

    /// Counts one finished broadcast by provider, outcome and plugin.
    pub fn broadcast(&self, provider: &str, outcome: &str, plugin: &str) {
        let mut m = self
            .broadcasts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() < MAX_SERIES {
            *m.entry((provider.into(), outcome.into(), plugin.into()))
                .or_default() += 1;
        }
    }

    /// One request's wait for its endpoint's throttle.
    pub fn throttle_wait(&self, endpoint: &str, plugin: &str, waited: std::time::Duration) {
        let ms = waited.as_millis().min(u64::MAX as u128) as u64;
        let mut m = self
            .throttle_waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_SERIES && !m.contains_key(&(endpoint.into(), plugin.into())) {
            return;
        }
        let h = m.entry((endpoint.into(), plugin.into())).or_default();
        if let Some(i) = WAIT_BUCKETS_MS.iter().position(|le| ms <= *le) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum_ms = h.sum_ms.saturating_add(ms);
    }

    /// Counts one "too fast" from a provider and the rate its endpoint
    /// slowed to. Labels: the provider kind and `provider-name/endpoint`,
    /// both from the config (no key, no secret).
    pub fn slowed(&self, provider_kind: &str, endpoint: &str, factor: f64) {
        let mut m = self
            .slowdowns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_SERIES && !m.contains_key(&(provider_kind.into(), endpoint.into())) {
            return;
        }
        let entry = m
            .entry((provider_kind.into(), endpoint.into()))
            .or_insert((0, 1.0));
        entry.0 += 1;
        entry.1 = factor;
    }

    /// Counts one reload (`plugin` or `config`) and whether it was applied.
    pub fn reload(&self, kind: &str, outcome: &str) {
        bump(&self.reloads, kind, outcome);
    }

    /// The inbound calls counted so far for `provider` with `outcome`.
    pub fn webhook_count(&self, provider: &str, outcome: &str) -> u64 {
        self.webhooks
            .lock()
            .ok()
            .and_then(|m| m.get(&(provider.to_string(), outcome.to_string())).copied())
            .unwrap_or(0)
    }

    /// The "too fast" counters and the slowdown gauge.
    fn render_slowdowns(&self, out: &mut String) {
        let Ok(m) = self.slowdowns.lock() else {
            return;
        };
        let name = "botbox_provider_rate_limited_total";
        let _ = writeln!(
            out,
            "# HELP {name} Answers in which a provider said too fast although the throttle allowed the request.\n# TYPE {name} counter"
        );
        for ((kind, endpoint), (n, _)) in m.iter() {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{}\",endpoint=\"{}\"}} {n}",
                escape(kind),
                escape(endpoint)
            );
        }
        let name = "botbox_throttle_slowdown_factor";
        let _ = writeln!(
            out,
            "# HELP {name} The fraction of its documented rate an endpoint was held to after the provider's last too fast (it recovers gradually from there).\n# TYPE {name} gauge"
        );
        for ((kind, endpoint), (_, factor)) in m.iter() {
            let _ = writeln!(
                out,
                "{name}{{provider=\"{}\",endpoint=\"{}\"}} {factor}",
                escape(kind),
                escape(endpoint)
            );
        }
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
        let name = "botbox_broadcasts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Finished messages by provider account, outcome and plugin.\n# TYPE {name} counter"
        );
        if let Ok(m) = self.broadcasts.lock() {
            for ((provider, outcome, plugin), v) in m.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{provider=\"{}\",outcome=\"{}\",plugin=\"{}\"}} {v}",
                    escape(provider),
                    escape(outcome),
                    escape(plugin)
                );
            }
        }
        let name = "botbox_throttle_wait_ms";
        let _ = writeln!(
            out,
            "# HELP {name} How long each provider request waited for its endpoint's throttle, in ms.\n# TYPE {name} histogram"
        );
        if let Ok(m) = self.throttle_waits.lock() {
            for ((endpoint, plugin), h) in m.iter() {
                let labels = format!(
                    "endpoint=\"{}\",plugin=\"{}\"",
                    escape(endpoint),
                    escape(plugin)
                );
                let mut cumulative = 0;
                for (le, n) in WAIT_BUCKETS_MS.iter().zip(h.buckets.iter()) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_ms);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
        self.render_slowdowns(&mut out);
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
        crate::capabilities::http::render_metrics(
            &mut out,
            plugins
                .iter()
                .map(|p| (p.name.as_str(), &*p.context.slices.http.stats)),
        );
        out
    }
}

/// The gauges of `GET /endpoints`, in the Prometheus text format: each
/// limit's use, limit and time until it is free again, the next slot, the
/// queue per plugin, and when the provider last refused a request. Times
/// are in the throttle's clock (real time unless `runtime.time_scale`).
pub fn render_endpoints(now: &EndpointsNow) -> String {
    let mut out = String::new();
    let seconds = |at_ms: u64| at_ms.saturating_sub(now.now_ms) as f64 / 1000.0;
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    let limits = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&LimitUsage) -> f64| {
        gauge(out, name, help);
        for e in &now.endpoints {
            for l in &e.limits {
                let _ = writeln!(
                    out,
                    "{name}{{endpoint=\"{}\",limit=\"{}\"}} {}",
                    escape(&e.endpoint),
                    escape(&l.spelled()),
                    value(l)
                );
            }
        }
    };
    limits(
        &mut out,
        "botbox_throttle_used",
        "Requests counted in each throttle window (a leaky bucket: its level; an execution-time budget: seconds spent).",
        &|l| match l {
            LimitUsage::Window { used, .. } => f64::from(*used),
            LimitUsage::Bucket { level, .. } => *level,
            LimitUsage::Budget { spent_ms, .. } => *spent_ms as f64 / 1000.0,
            LimitUsage::PerDay { used, .. } => f64::from(*used),
        },
    );
    limits(
        &mut out,
        "botbox_throttle_limit",
        "Requests each throttle window allows (a leaky bucket: its burst; an execution-time budget: its seconds).",
        &|l| match l {
            LimitUsage::Window { limit, .. } => f64::from(*limit),
            LimitUsage::Bucket { burst, .. } => f64::from(*burst),
            LimitUsage::Budget { seconds, .. } => f64::from(*seconds),
            LimitUsage::PerDay { limit, .. } => f64::from(*limit),
        },
    );
    limits(
        &mut out,
        "botbox_throttle_resets_in_seconds",
        "Seconds until each throttle window counts nothing again (a leaky bucket: is empty).",
        &|l| match l {
            LimitUsage::Window { resets_at_ms, .. } => resets_at_ms.map_or(0.0, seconds),
            LimitUsage::Bucket { empty_at_ms, .. } => seconds(*empty_at_ms),
            LimitUsage::Budget { resets_at_ms, .. } => resets_at_ms.map_or(0.0, seconds),
            LimitUsage::PerDay { resets_at_ms, .. } => seconds(*resets_at_ms),
        },
    );
    let name = "botbox_throttle_next_slot_seconds";
    gauge(
        &mut out,
        name,
        "Seconds until the endpoint's throttle lets the next request go (0: now).",
    );
    for e in &now.endpoints {
        let _ = writeln!(
            out,
            "{name}{{endpoint=\"{}\"}} {}",
            escape(&e.endpoint),
            seconds(e.next_slot_ms)
        );
    }
    let name = "botbox_queue_messages";
    gauge(
        &mut out,
        name,
        "Messages waiting on an endpoint (queued or being sent), per plugin.",
    );
    for e in &now.endpoints {
        for q in &e.queue {
            let _ = writeln!(
                out,
                "{name}{{endpoint=\"{}\",plugin=\"{}\"}} {}",
                escape(&e.endpoint),
                escape(&q.plugin),
                q.messages
            );
        }
    }
    let name = "botbox_provider_refusal_timestamp_seconds";
    gauge(
        &mut out,
        name,
        "When the provider last refused a request of the endpoint, by outcome.",
    );
    for e in &now.endpoints {
        if let Some(r) = &e.last_refusal {
            let _ = writeln!(
                out,
                "{name}{{endpoint=\"{}\",outcome=\"{}\"}} {}",
                escape(&e.endpoint),
                r.outcome,
                r.at_ms as f64 / 1000.0
            );
        }
    }
    out
}

/// Label values: backslash, quote and newline escaped, as the format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn throttle_waits_land_in_their_buckets_per_endpoint_and_plugin() {
        let m = Metrics::default();
        m.throttle_wait("tc/send_broadcast_msg", "news", Duration::from_micros(300));
        m.throttle_wait("tc/send_broadcast_msg", "news", Duration::from_millis(950));
        m.throttle_wait("em/all-users-broadcast", "a\"b", Duration::from_secs(1800));
        m.broadcast("tc", "delivered", "news");
        let waits = m.throttle_waits.lock().unwrap();
        let news = &waits[&("tc/send_broadcast_msg".into(), "news".into())];
        assert_eq!(news.count, 2);
        assert_eq!(news.sum_ms, 950);
        // 0 ms ≤ 1, 950 ms ≤ 1,000.
        assert_eq!(news.buckets[0], 1);
        assert_eq!(news.buckets[3], 1);
        let other = &waits[&("em/all-users-broadcast".into(), "a\"b".into())];
        assert_eq!(other.buckets[6], 0);
        assert_eq!(other.buckets[7], 1, "30 minutes ≤ 1 h");
    }

    #[test]
    fn too_fast_answers_are_counted_with_the_rate_they_left() {
        let m = Metrics::default();
        m.slowed("tencent", "tc/send_group_msg", 0.5);
        m.slowed("tencent", "tc/send_group_msg", 0.25);
        m.slowed("bitrix24", "b\"x/rest", 0.5);
        let mut out = String::new();
        m.render_slowdowns(&mut out);
        assert!(out.contains(
            "botbox_provider_rate_limited_total{provider=\"tencent\",endpoint=\"tc/send_group_msg\"} 2\n"
        ), "{out}");
        assert!(out.contains(
            "botbox_throttle_slowdown_factor{provider=\"tencent\",endpoint=\"tc/send_group_msg\"} 0.25\n"
        ), "{out}");
        assert!(out.contains("endpoint=\"b\\\"x/rest\"} 1\n"), "{out}");
        assert!(out.contains("# TYPE botbox_throttle_slowdown_factor gauge"));
    }
}
