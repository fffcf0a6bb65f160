//! One host's throttles: the state in memory, where the host decides, and
//! every send persisted to a [`SendLog`] so that daily counters survive a
//! restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{OutboxError, Reservation, SEND_HISTORY_MS, SendLog, ThrottleStore};
use crate::delivery::throttle::{Clock, Layer, MAX_LIVE_KEYS, Slowdown, Throttle, ThrottleKey};

/// How many slots are taken between two sweeps of the send log for
/// histories nobody reads any more.
const FORGET_EVERY: u64 = 1024;

/// One history's live state, and when it was last used (for the cap).
struct Live {
    throttle: Arc<Mutex<Throttle>>,
    used: u64,
}

/// The [`ThrottleStore`] of a host on its own: a [`Throttle`] per history
/// (an endpoint, one of its keys, an account's ceiling), behind a mutex
/// (its atomic read-modify-write).
pub struct HostThrottles {
    log: Arc<dyn SendLog>,
    states: Mutex<HashMap<String, Live>>,
    /// Counts uses, for least-recently-used eviction.
    ticks: AtomicU64,
    /// Counts slots taken, for the log sweep.
    takes: AtomicU64,
}

impl HostThrottles {
    /// Throttles whose sends `log` keeps.
    pub fn new(log: Arc<dyn SendLog>) -> HostThrottles {
        HostThrottles {
            log,
            states: Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            takes: AtomicU64::new(0),
        }
    }

    /// A history's state from the log: the sends still inside its longest
    /// window.
    fn load(
        &self,
        layer: &Layer,
        margin_ms: u64,
        now_ms: u64,
        slowdown: Option<Slowdown>,
    ) -> Throttle {
        let since = now_ms.saturating_sub(Slowdown::horizon_ms(&layer.spec, slowdown, now_ms));
        let history = self.log.sends_since(&layer.name, since).unwrap_or_default();
        Throttle::with_history(layer.spec.clone(), margin_ms, history)
    }

    /// A history's state, loaded first if it is new here (or was evicted),
    /// rebuilt if its limits changed.
    fn state(
        &self,
        layer: &Layer,
        margin_ms: u64,
        now_ms: u64,
    ) -> Result<Arc<Mutex<Throttle>>, OutboxError> {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock().map_err(|_| OutboxError::Poisoned)?;
        if let Some(live) = states.get_mut(&layer.name) {
            live.used = tick;
            return Ok(live.throttle.clone());
        }
        // Keyed histories come from conversations guests answer into: keep
        // a bounded number live, forgetting the least recently used (its
        // sends stay in the log and are read back if it comes back).
        // Endpoints and ceilings are few and come from the config.
        if states.len() >= MAX_LIVE_KEYS
            && let Some(oldest) = states
                .iter()
                .filter(|(name, _)| name.contains('#'))
                .min_by_key(|(_, live)| live.used)
                .map(|(name, _)| name.clone())
        {
            states.remove(&oldest);
        }
        let throttle = Arc::new(Mutex::new(self.load(layer, margin_ms, now_ms, None)));
        states.insert(
            layer.name.clone(),
            Live {
                throttle: throttle.clone(),
                used: tick,
            },
        );
        Ok(throttle)
    }

    /// The live states of `layers`, in the order of their names: every
    /// taker locks them in the same order, so two workers sharing a
    /// ceiling cannot deadlock.
    fn states_of(
        &self,
        layers: &mut [Layer],
        margin_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Arc<Mutex<Throttle>>>, OutboxError> {
        layers.sort_by(|a, b| a.name.cmp(&b.name));
        layers
            .iter()
            .map(|layer| {
                let state = self.state(layer, margin_ms, now_ms)?;
                let mut t = state.lock().map_err(|_| OutboxError::Poisoned)?;
                if t.spec() != &layer.spec || t.margin_ms() != margin_ms {
                    *t = self.load(layer, margin_ms, now_ms, None);
                }
                drop(t);
                Ok(state)
            })
            .collect()
    }

    /// How many histories this host keeps live (for tests of the cap).
    pub fn live_histories(&self) -> usize {
        self.states.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl ThrottleStore for HostThrottles {
    fn prepare(&self, key: &ThrottleKey, now_ms: u64, reload: bool) -> Result<(), OutboxError> {
        for layer in key.layers(None) {
            let state = self.state(&layer, key.margin_ms, now_ms)?;
            let mut throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
            if reload || throttle.spec() != &layer.spec || throttle.margin_ms() != key.margin_ms {
                // A slowdown outlives a reload: the provider said it.
                let slowdown = throttle.slowdown();
                *throttle = self.load(&layer, key.margin_ms, now_ms, slowdown);
                throttle.set_slowdown(slowdown);
            }
        }
        Ok(())
    }

    fn estimate(&self, key: &ThrottleKey, n: usize, now_ms: u64) -> Result<u64, OutboxError> {
        // The endpoint's own history and the ceiling: a message's key is
        // not known before it is planned.
        let mut layers = key.layers(None);
        let states = self.states_of(&mut layers, key.margin_ms, now_ms)?;
        let mut eta = now_ms;
        for state in states {
            let throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
            eta = eta.max(throttle.eta_of_nth(n, now_ms));
        }
        Ok(eta)
    }

    fn state_at(&self, key: &ThrottleKey, now_ms: u64) -> Result<Throttle, OutboxError> {
        // The endpoint's own history (a keyed endpoint's per-key and
        // ceiling histories are not shown here).
        let own = key.layers(None).swap_remove(0);
        let state = self.state(&own, key.margin_ms, now_ms)?;
        let throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
        Ok(throttle.clone())
    }

    fn take(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        _claim: &str,
        clock: &dyn Clock,
    ) -> Result<Reservation, OutboxError> {
        let now = clock.now_ms();
        let mut layers = key.layers(scope);
        let states = self.states_of(&mut layers, key.margin_ms, now)?;
        // Every history held for the decision: a ceiling is shared with
        // other endpoints' workers.
        let mut guards = states
            .iter()
            .map(|s| s.lock().map_err(|_| OutboxError::Poisoned))
            .collect::<Result<Vec<_>, _>>()?;
        let at = Throttle::next_allowed_all(guards.iter().map(|g| &**g), now);
        if at > now {
            return Ok(Reservation::Wait(at - now));
        }
        // Persist first, then stamp the send at the moment the request
        // leaves: the write's latency must not sit between the stamp and
        // the request, where it would eat the margin.
        for layer in &layers {
            if let Err(e) = self.log.record_send(&layer.name, now) {
                tracing::warn!(endpoint = %key.endpoint, "cannot persist throttle history: {e}");
            }
        }
        let departs = clock.now_ms();
        let mut throttles: Vec<&mut Throttle> = guards.iter_mut().map(|g| &mut **g).collect();
        // Nobody else could take a slot of these histories meanwhile: the
        // guards are held. `take_all` counts the send in each.
        let granted = Throttle::take_all(&mut throttles, departs).unwrap_or(departs);
        drop(guards);
        if self.takes.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1
            && let Err(e) = self.log.forget_before(now.saturating_sub(SEND_HISTORY_MS))
        {
            tracing::warn!("cannot forget old throttle history: {e}");
        }
        Ok(Reservation::Granted(granted))
    }

    fn answered(
        &self,
        key: &ThrottleKey,
        scope: Option<&str>,
        stamped_ms: u64,
        clock: &dyn Clock,
    ) -> Result<(), OutboxError> {
        let answered = clock.now_ms();
        let mut layers = key.layers(scope);
        for state in self.states_of(&mut layers, key.margin_ms, answered)? {
            state
                .lock()
                .map_err(|_| OutboxError::Poisoned)?
                .answered(stamped_ms, answered);
        }
        Ok(())
    }

    fn charge(&self, key: &ThrottleKey, stamped_ms: u64, cost_ms: u64) -> Result<(), OutboxError> {
        // Budgets are the endpoint's own (Bitrix24 counts per method). Kept
        // in memory: after a restart the budget starts empty, which the
        // 10% headroom of `Throttle::budget_allows` and the provider's own
        // "too fast" (a slowdown) cover.
        let mut layers = key.layers(None);
        layers.truncate(1);
        for state in self.states_of(&mut layers, key.margin_ms, stamped_ms)? {
            state
                .lock()
                .map_err(|_| OutboxError::Poisoned)?
                .charge(stamped_ms, cost_ms);
        }
        Ok(())
    }

    fn slow_down(
        &self,
        key: &ThrottleKey,
        layer: &Layer,
        clock: &dyn Clock,
    ) -> Result<f64, OutboxError> {
        let now = clock.now_ms();
        let mut layers = vec![layer.clone()];
        let states = self.states_of(&mut layers, key.margin_ms, now)?;
        let mut factor = 1.0;
        for state in states {
            factor = state
                .lock()
                .map_err(|_| OutboxError::Poisoned)?
                .slow_down(now);
        }
        Ok(factor)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::delivery::store::SqliteOutbox;
    use crate::delivery::throttle::ThrottleSpec;

    /// A clock that stands where the test puts it.
    struct At(AtomicU64);

    impl Clock for At {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn real(&self, ms: u64) -> Duration {
            Duration::from_millis(ms)
        }
        fn clock_ms(&self, real: Duration) -> u64 {
            real.as_millis() as u64
        }
    }

    fn key(spec: ThrottleSpec) -> ThrottleKey {
        ThrottleKey::plain("p/default", spec, 30)
    }

    /// Keys come from conversations guests answer into: however many
    /// there are, the host keeps a bounded number live, and a forgotten
    /// key's sends are read back from the log when it returns.
    #[test]
    fn keyed_histories_stay_bounded_and_come_back_from_the_log() {
        let log = Arc::new(SqliteOutbox::in_memory().unwrap());
        let host = HostThrottles::new(log.clone());
        let clock = At(AtomicU64::new(1000));
        let keyed = ThrottleKey {
            per_key: Some(ThrottleSpec::windows(&[(1, 60_000)])),
            ..key(ThrottleSpec::default())
        };
        assert_eq!(
            host.take(&keyed, Some("g0"), "m", &clock).unwrap(),
            Reservation::Granted(1000)
        );
        for i in 1..MAX_LIVE_KEYS + 100 {
            let group = format!("g{i}");
            host.take(&keyed, Some(&group), "m", &clock).unwrap();
        }
        assert!(
            host.live_histories() <= MAX_LIVE_KEYS,
            "{}",
            host.live_histories()
        );
        // g0 was the least recently used, so it was forgotten; its send
        // comes back from the log, and it still waits its minute.
        assert!(matches!(
            host.take(&keyed, Some("g0"), "m", &clock).unwrap(),
            Reservation::Wait(_)
        ));
    }

    #[test]
    fn slots_are_decided_in_the_host_persisted_and_reloaded_after_a_restart() {
        let log = Arc::new(SqliteOutbox::in_memory().unwrap());
        let clock = At(AtomicU64::new(1000));
        let one_a_second = key(ThrottleSpec::windows(&[(1, 1000)]));
        let host = HostThrottles::new(log.clone());
        assert_eq!(
            host.take(&one_a_second, None, "m1", &clock).unwrap(),
            Reservation::Granted(1000)
        );
        assert_eq!(
            host.take(&one_a_second, None, "m2", &clock).unwrap(),
            Reservation::Wait(1000 + 10 + 30)
        );
        assert_eq!(log.sends_since("p/default", 0).unwrap(), vec![1000]);
        // Answered 500 ms late: the next may not leave before 1500 + 1000.
        clock.0.store(1500, Ordering::SeqCst);
        host.answered(&one_a_second, None, 1000, &clock).unwrap();
        assert!(host.estimate(&one_a_second, 1, 1500).unwrap() >= 2500);
        // A restart reads the persisted send back.
        let restarted = HostThrottles::new(log.clone());
        restarted.prepare(&one_a_second, 1500, false).unwrap();
        assert_eq!(restarted.estimate(&one_a_second, 1, 1500).unwrap(), 2040);
        // Limits changed by a reload: the state is rebuilt under them.
        let unthrottled = key(ThrottleSpec::default());
        restarted.prepare(&unthrottled, 1500, false).unwrap();
        assert_eq!(restarted.estimate(&unthrottled, 5, 1500).unwrap(), 1500);
    }
}
