//! The simulated clock and the limiters that run on it.
//!
//! Simulated time is `real elapsed × time_scale + manual advance`, measured from
//! the simulator's start. Every documented window (30 minutes, one day, a token
//! lifetime, Tencent's 5-minute dedup) is expressed in simulated time, so a
//! large scale lets a test watch a whole day of quota in under a second.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct SimClock {
    origin: Instant,
    scale: f64,
    /// Manual jumps (`Sim::advance`), in simulated nanoseconds.
    offset_nanos: AtomicU64,
    /// Real-time slack, already converted to simulated time.
    slack: Duration,
    /// The wall time (ms since the epoch) at the start: simulated time
    /// `t` is the calendar time `wall_origin_ms + t`, as a host's
    /// `ScaledClock::anchored(scale, wall_origin_ms)` reads it.
    wall_origin_ms: u64,
}

impl SimClock {
    /// `scale` must already be validated finite and positive.
    pub(crate) fn new(scale: f64, tolerance: Duration) -> Self {
        SimClock {
            origin: Instant::now(),
            scale,
            offset_nanos: AtomicU64::new(0),
            slack: mul_saturating(tolerance, scale),
            wall_origin_ms: unix_ms(),
        }
    }

    /// The wall time the simulated clock started at.
    pub(crate) fn wall_origin_ms(&self) -> u64 {
        self.wall_origin_ms
    }

    /// Simulated time `at` on the calendar: ms since the epoch.
    pub(crate) fn calendar_ms(&self, at: Duration) -> u64 {
        self.wall_origin_ms
            .saturating_add(u64::try_from(at.as_millis()).unwrap_or(u64::MAX))
    }

    /// Simulated time since the start.
    pub(crate) fn now(&self) -> Duration {
        let real = mul_saturating(self.origin.elapsed(), self.scale);
        real.saturating_add(Duration::from_nanos(
            self.offset_nanos.load(Ordering::Relaxed),
        ))
    }

    /// The instant used for limit checks: a request may be up to the tolerance early.
    pub(crate) fn now_for_limits(&self) -> Duration {
        self.now().saturating_add(self.slack)
    }

    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(nanos))
            });
    }

    /// How long a simulated span lasts in real time.
    pub(crate) fn to_real(&self, sim: Duration) -> Duration {
        Duration::from_secs_f64(sim.as_secs_f64() / self.scale)
    }

    pub(crate) fn scale(&self) -> f64 {
        self.scale
    }
}

fn mul_saturating(d: Duration, by: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * by).unwrap_or(Duration::MAX)
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// "At most `limit` events per calendar day" in the zone `offset_min`
/// minutes east of UTC, on the simulated calendar
/// ([`SimClock::calendar_ms`]): the count starts over at the zone's midnight.
#[derive(Debug)]
pub(crate) struct CalendarDay {
    limit: u32,
    offset_min: i32,
    /// The current day's number and its count.
    day: i64,
    used: u32,
}

impl CalendarDay {
    pub(crate) fn new(limit: u32, offset_min: i32) -> Self {
        CalendarDay {
            limit,
            offset_min,
            day: i64::MIN,
            used: 0,
        }
    }

    fn day_of(&self, calendar_ms: u64) -> i64 {
        (calendar_ms as i64 + i64::from(self.offset_min) * 60_000).div_euclid(86_400_000)
    }

    /// Whether one more event fits on the day of `calendar_ms`.
    pub(crate) fn allows(&mut self, calendar_ms: u64) -> bool {
        let day = self.day_of(calendar_ms);
        if day != self.day {
            self.day = day;
            self.used = 0;
        }
        self.used < self.limit
    }

    /// Counts an event on the day of `calendar_ms`.
    pub(crate) fn record(&mut self, calendar_ms: u64) {
        // Moves to the day of `calendar_ms` first, if it is a new one.
        self.allows(calendar_ms);
        self.used = self.used.saturating_add(1);
    }

    pub(crate) fn describe(&self) -> String {
        format!("{}/calendar day (UTC{:+} min)", self.limit, self.offset_min)
    }
}

/// "At most `limit` events in any span of `window`": a sliding log, the
/// strictest reading of "N per window". A calendar-aligned server can never
/// refuse what this allows, so a client that keeps to it is safe wherever the
/// real server's window boundaries fall.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: u32,
    window: Duration,
    events: VecDeque<Duration>,
}

impl SlidingWindow {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        SlidingWindow {
            limit,
            window,
            events: VecDeque::new(),
        }
    }

    /// Whether one more event fits at `at`; expired events are forgotten.
    pub(crate) fn allows(&mut self, at: Duration) -> bool {
        while let Some(&first) = self.events.front() {
            if first.saturating_add(self.window) <= at {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.events.len() < self.limit as usize
    }

    pub(crate) fn record(&mut self, at: Duration) {
        self.events.push_back(at);
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} per {}", self.limit, human_span(self.window))
    }
}

/// Takes one slot in every window at `now`, or names the first full one
/// (checked at `check_at`) and takes none.
pub(crate) fn take_all(
    windows: &mut [SlidingWindow],
    check_at: Duration,
    now: Duration,
) -> Result<(), String> {
    for w in windows.iter_mut() {
        if !w.allows(check_at) {
            return Err(w.describe());
        }
    }
    for w in windows {
        w.record(now);
    }
    Ok(())
}

/// Bitrix24's per-portal limiter: every request adds one to a bucket that
/// drains at a fixed rate; a request that would overflow it is refused.
#[derive(Debug)]
pub(crate) struct LeakyBucket {
    capacity: f64,
    drain_per_sec: f64,
    level: f64,
    last: Duration,
}

impl LeakyBucket {
    pub(crate) fn new(capacity: u32, drain_per_sec: f64) -> Self {
        LeakyBucket {
            capacity: f64::from(capacity),
            drain_per_sec: if drain_per_sec.is_finite() && drain_per_sec > 0.0 {
                drain_per_sec
            } else {
                0.0
            },
            level: 0.0,
            last: Duration::ZERO,
        }
    }

    fn level_at(&self, at: Duration) -> f64 {
        let elapsed = at.saturating_sub(self.last).as_secs_f64();
        (self.level - elapsed * self.drain_per_sec).max(0.0)
    }

    /// Adds one request arriving at `now` (checked at `check_at`, which
    /// includes the tolerance); false if the bucket would overflow.
    pub(crate) fn try_add(&mut self, now: Duration, check_at: Duration) -> bool {
        if self.level_at(check_at) + 1.0 > self.capacity + 1e-9 {
            return false;
        }
        self.level = self.level_at(now.max(self.last)) + 1.0;
        self.last = now.max(self.last);
        true
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "leaky bucket {}/s, burst {}",
            self.drain_per_sec, self.capacity
        )
    }
}

pub(crate) fn human_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400 => "day".to_owned(),
        3_600 => "hour".to_owned(),
        60 => "minute".to_owned(),
        1 => "second".to_owned(),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        _ => format!("{:?}", d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_allows_exactly_limit_per_window() {
        let mut w = SlidingWindow::new(2, Duration::from_secs(60));
        let t = Duration::from_secs;
        assert!(w.allows(t(0)));
        w.record(t(0));
        assert!(w.allows(t(10)));
        w.record(t(10));
        assert!(!w.allows(t(59)));
        assert!(
            w.allows(t(60)),
            "the first event leaves the window at exactly 60 s"
        );
        assert_eq!(w.describe(), "2 per minute");
    }

    #[test]
    fn leaky_bucket_bursts_then_drains() {
        let mut b = LeakyBucket::new(3, 2.0);
        let t = Duration::from_millis;
        for _ in 0..3 {
            assert!(b.try_add(t(0), t(0)));
        }
        assert!(!b.try_add(t(0), t(0)));
        assert!(
            !b.try_add(t(400), t(400)),
            "0.8 drained is less than one slot"
        );
        assert!(b.try_add(t(500), t(500)));
        assert!(!b.try_add(t(500), t(500)));
    }

    #[test]
    fn clock_scales_and_advances() {
        let c = SimClock::new(1000.0, Duration::ZERO);
        c.advance(Duration::from_secs(3600));
        assert!(c.now() >= Duration::from_secs(3600));
        assert_eq!(
            c.to_real(Duration::from_secs(1800)),
            Duration::from_millis(1800)
        );
    }
}
