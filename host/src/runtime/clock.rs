//! The wall clock of a host: what plugins read through WASI's
//! `wall-clock` (JavaScript's `Date.now()`, Python's `time.time()`) and
//! what cron schedules fire by.
//!
//! A running host reads the system clock. `botbox test` fixes it at the
//! instant a case names and moves it only when the case says so, so replies
//! that depend on the time and the firing of schedules come out the same on
//! every run. The deadline a plugin runs under and the delivery throttles
//! keep counting real (monotonic) time either way: a fixed wall clock must
//! not stop a runaway plugin.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock plugins and schedules read. Cheap to clone: clones of a
/// fixed clock share its time.
#[derive(Clone, Debug, Default)]
pub enum WallClock {
    /// The operating system's clock.
    #[default]
    System,
    /// A clock standing still at a chosen instant until advanced
    /// (nanoseconds since the Unix epoch).
    Fixed(Arc<AtomicU64>),
}

impl WallClock {
    /// A clock that stands at `at` until [`WallClock::advance`] moves it.
    /// Instants before 1970 or after 2554 are clamped to those years.
    pub fn fixed(at: SystemTime) -> WallClock {
        WallClock::Fixed(Arc::new(AtomicU64::new(nanos_since_epoch(at))))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        match self {
            WallClock::System => SystemTime::now(),
            WallClock::Fixed(nanos) => {
                UNIX_EPOCH + Duration::from_nanos(nanos.load(Ordering::SeqCst))
            }
        }
    }

    /// The time now, as the schedules' cron expressions read it (UTC).
    pub fn now_utc(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::<chrono::Utc>::from(self.now())
    }

    /// Moves a fixed clock forward by `by`; the system clock cannot be
    /// moved, and `false` says so.
    pub fn advance(&self, by: Duration) -> bool {
        match self {
            WallClock::System => false,
            WallClock::Fixed(nanos) => {
                let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
                // fetch_update cannot fail with a closure that always returns Some.
                let _ = nanos.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_add(by))
                });
                true
            }
        }
    }
}

fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        // Both count in nanoseconds.
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_stands_still_until_advanced_and_clones_share_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let clock = WallClock::fixed(at);
        let shared = clock.clone();
        assert_eq!(clock.now(), at);
        assert!(shared.advance(Duration::from_secs(90)));
        assert_eq!(clock.now(), at + Duration::from_secs(90));
        assert_eq!(
            wasmtime_wasi::HostWallClock::now(&clock),
            Duration::from_secs(1_795_000_090)
        );
        assert_eq!(clock.now_utc().to_rfc3339(), "2026-11-18T11:08:10+00:00");
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        assert!(!WallClock::System.advance(Duration::from_secs(1)));
    }
}
