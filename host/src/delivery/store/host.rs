//! One host's throttles: the state in memory, where the host decides, and
//! every send persisted to a [`SendLog`] so that daily counters survive a
//! restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{OutboxError, Reservation, SendLog, ThrottleStore};
use crate::delivery::throttle::{Clock, Throttle, ThrottleKey};

/// The [`ThrottleStore`] of a host on its own: a [`Throttle`] per
/// endpoint, behind a mutex (its atomic read-modify-write).
pub struct HostThrottles {
    log: Arc<dyn SendLog>,
    states: Mutex<HashMap<String, Arc<Mutex<Throttle>>>>,
}

impl HostThrottles {
    /// Throttles whose sends `log` keeps.
    pub fn new(log: Arc<dyn SendLog>) -> HostThrottles {
        HostThrottles {
            log,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint's state from the log: the sends still inside its
    /// longest window.
    fn load(&self, key: &ThrottleKey, now_ms: u64) -> Throttle {
        let since = now_ms.saturating_sub(key.spec.horizon_ms());
        let history = self
            .log
            .sends_since(&key.endpoint, since)
            .unwrap_or_default();
        Throttle::with_history(key.spec.clone(), key.margin_ms, history)
    }

    /// The endpoint's state, loaded first if it is new here.
    fn state(&self, key: &ThrottleKey, now_ms: u64) -> Result<Arc<Mutex<Throttle>>, OutboxError> {
        let mut states = self.states.lock().map_err(|_| OutboxError::Poisoned)?;
        if let Some(state) = states.get(&key.endpoint) {
            return Ok(state.clone());
        }
        let state = Arc::new(Mutex::new(self.load(key, now_ms)));
        states.insert(key.endpoint.clone(), state.clone());
        Ok(state)
    }
}

impl ThrottleStore for HostThrottles {
    fn prepare(&self, key: &ThrottleKey, now_ms: u64, reload: bool) -> Result<(), OutboxError> {
        let state = self.state(key, now_ms)?;
        let mut throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
        if reload || throttle.spec() != &key.spec || throttle.margin_ms() != key.margin_ms {
            *throttle = self.load(key, now_ms);
        }
        Ok(())
    }

    fn estimate(&self, key: &ThrottleKey, n: usize, now_ms: u64) -> Result<u64, OutboxError> {
        let state = self.state(key, now_ms)?;
        let throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
        Ok(throttle.eta_of_nth(n, now_ms))
    }

    fn state_at(&self, key: &ThrottleKey, now_ms: u64) -> Result<Throttle, OutboxError> {
        let state = self.state(key, now_ms)?;
        let throttle = state.lock().map_err(|_| OutboxError::Poisoned)?;
        Ok(throttle.clone())
    }

    fn take(
        &self,
        key: &ThrottleKey,
        _claim: &str,
        clock: &dyn Clock,
    ) -> Result<Reservation, OutboxError> {
        let now = clock.now_ms();
        let state = self.state(key, now)?;
        // The slot is counted below, at departure.
        let at = state
            .lock()
            .map_err(|_| OutboxError::Poisoned)?
            .next_allowed(now);
        if at > now {
            return Ok(Reservation::Wait(at - now));
        }
        // Persist first, then stamp the send at the moment the request
        // leaves: the write's latency must not sit between the stamp and
        // the request, where it would eat the margin. One worker takes an
        // endpoint's slots, so nobody takes this one meanwhile.
        if let Err(e) = self.log.record_send(&key.endpoint, now) {
            tracing::warn!(endpoint = %key.endpoint, "cannot persist throttle history: {e}");
        }
        let departs = clock.now_ms();
        state
            .lock()
            .map_err(|_| OutboxError::Poisoned)?
            .record(departs);
        Ok(Reservation::Granted(departs))
    }

    fn answered(
        &self,
        key: &ThrottleKey,
        stamped_ms: u64,
        clock: &dyn Clock,
    ) -> Result<(), OutboxError> {
        let answered = clock.now_ms();
        let state = self.state(key, answered)?;
        state
            .lock()
            .map_err(|_| OutboxError::Poisoned)?
            .answered(stamped_ms, answered);
        Ok(())
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
        ThrottleKey {
            endpoint: "p/default".into(),
            spec,
            margin_ms: 30,
        }
    }

    #[test]
    fn slots_are_decided_in_the_host_persisted_and_reloaded_after_a_restart() {
        let log = Arc::new(SqliteOutbox::in_memory().unwrap());
        let clock = At(AtomicU64::new(1000));
        let one_a_second = key(ThrottleSpec::windows(&[(1, 1000)]));
        let host = HostThrottles::new(log.clone());
        assert_eq!(
            host.take(&one_a_second, "m1", &clock).unwrap(),
            Reservation::Granted(1000)
        );
        assert_eq!(
            host.take(&one_a_second, "m2", &clock).unwrap(),
            Reservation::Wait(1000 + 10 + 30)
        );
        assert_eq!(log.sends_since("p/default", 0).unwrap(), vec![1000]);
        // Answered 500 ms late: the next may not leave before 1500 + 1000.
        clock.0.store(1500, Ordering::SeqCst);
        host.answered(&one_a_second, 1000, &clock).unwrap();
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
