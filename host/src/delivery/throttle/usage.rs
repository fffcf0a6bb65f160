//! What a throttle's state means to an operator (`GET /endpoints`, the
//! `/metrics` gauges): read from a [`Throttle`], never changing it. Kept
//! apart from the decision (`Throttle::take` and what it calls), which it
//! mirrors: a send counts in a window for as long as `next_allowed` counts
//! it (the period, its 1%, and the arrival margin).

use super::{Limit, Throttle, day_start, sends_on_day};
use crate::providers::limits::show_zone;

/// A day: windows this long or longer are the daily quotas.
pub use super::DAY_MS;

/// One limit of a throttle, as it stands at a moment.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitUsage {
    /// At most `limit` requests in any rolling `period_ms`.
    Window {
        /// Requests the window allows.
        limit: u32,
        /// The window's length.
        period_ms: u64,
        /// Requests still counted in it.
        used: u32,
        /// When the oldest counted request leaves it (a slot frees), if
        /// any is counted.
        frees_at_ms: Option<u64>,
        /// When the newest counted request leaves it (the whole window is
        /// free again), if any is counted.
        resets_at_ms: Option<u64>,
    },
    /// A leaky bucket: each request adds one, it drains at a fixed rate.
    Bucket {
        /// How full it is, in requests.
        level: f64,
        /// What it holds.
        burst: u32,
        /// How fast it drains, in requests per second (as documented).
        per_second: f64,
        /// When it is empty again at that rate.
        empty_at_ms: u64,
    },
    /// An execution-time budget (Bitrix24's `time.operating`): seconds of
    /// the provider's work allowed in any `period_ms`.
    Budget {
        /// Execution seconds the window allows.
        seconds: u32,
        /// The window's length.
        period_ms: u64,
        /// Execution milliseconds the provider reported inside it.
        spent_ms: u64,
        /// When the newest counted cost leaves it, if any is counted.
        resets_at_ms: Option<u64>,
    },
    /// A quota per calendar day in a zone: resets at its midnight.
    PerDay {
        /// Requests one calendar day allows.
        limit: u32,
        /// The zone's offset from UTC, in minutes.
        utc_offset_minutes: i32,
        /// Requests counted against today (those within the arrival
        /// margin of midnight count against both days).
        used: u32,
        /// The next midnight in the zone: the quota is whole again.
        resets_at_ms: u64,
    },
}

impl LimitUsage {
    /// Whether the limit is a daily quota (a window of a day or more).
    pub fn is_daily(&self) -> bool {
        matches!(self, LimitUsage::Window { period_ms, .. } if *period_ms >= DAY_MS)
            || matches!(self, LimitUsage::PerDay { .. })
    }

    /// The limit as an operator writes it in `throttle` (`3/1d`,
    /// `bucket 2/s burst 50`), for labels.
    pub fn spelled(&self) -> String {
        match self {
            LimitUsage::Window {
                limit, period_ms, ..
            } => format!("{limit}/{}", spell_period(*period_ms)),
            LimitUsage::Bucket {
                burst, per_second, ..
            } => format!("bucket {per_second}/s burst {burst}"),
            LimitUsage::Budget {
                seconds, period_ms, ..
            } => format!("budget {seconds}s/{}", spell_period(*period_ms)),
            LimitUsage::PerDay {
                limit,
                utc_offset_minutes,
                ..
            } => format!("{limit}/day {}", show_zone(*utc_offset_minutes)),
        }
    }
}

fn spell_period(ms: u64) -> String {
    for (unit, size) in [("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Throttle {
    /// Each limit's use at `now_ms`, in the order of the spec.
    pub fn usage(&self, now_ms: u64) -> Vec<LimitUsage> {
        self.spec
            .limits
            .iter()
            .zip(&self.logs)
            .map(|(limit, log)| match limit {
                Limit::Window { count, period_ms } => {
                    let leaves = |at: u64| at + period_ms + period_ms / 100 + self.margin_ms;
                    let counted: Vec<u64> = log
                        .iter()
                        .map(|at| leaves(*at))
                        .filter(|left| *left > now_ms)
                        .collect();
                    LimitUsage::Window {
                        limit: *count,
                        period_ms: *period_ms,
                        used: counted.len() as u32,
                        frees_at_ms: counted.iter().min().copied(),
                        resets_at_ms: counted.iter().max().copied(),
                    }
                }
                Limit::LeakyBucket { per_second, burst } => {
                    // The rate `next_allowed` drains at.
                    let rate = per_second * super::BUCKET_DRAIN;
                    let level = self.bucket_level_at(now_ms, rate);
                    LimitUsage::Bucket {
                        level,
                        burst: *burst,
                        per_second: *per_second,
                        empty_at_ms: now_ms + (level / rate.max(0.001) * 1000.0).ceil() as u64,
                    }
                }
                Limit::Budget { seconds, period_ms } => {
                    let inside: Vec<&(u64, u64)> = self
                        .spent
                        .iter()
                        .filter(|(at, _)| at + period_ms > now_ms)
                        .collect();
                    LimitUsage::Budget {
                        seconds: *seconds,
                        period_ms: *period_ms,
                        spent_ms: inside.iter().map(|(_, cost)| cost).sum(),
                        resets_at_ms: inside.last().map(|(at, _)| at + period_ms),
                    }
                }
                Limit::PerDay {
                    count,
                    utc_offset_minutes,
                } => {
                    let today = day_start(now_ms, *utc_offset_minutes);
                    LimitUsage::PerDay {
                        limit: *count,
                        utc_offset_minutes: *utc_offset_minutes,
                        used: sends_on_day(log, today, self.margin_ms) as u32,
                        resets_at_ms: today + DAY_MS,
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::throttle::ThrottleSpec;

    #[test]
    fn a_window_counts_its_sends_until_they_leave_it() {
        let spec = ThrottleSpec::windows(&[(1, 1000), (3, DAY_MS)]);
        let t = Throttle::with_history(spec, 30, vec![1000, 5000]);
        let usage = t.usage(5500);
        assert_eq!(
            usage[0],
            LimitUsage::Window {
                limit: 1,
                period_ms: 1000,
                used: 1,
                frees_at_ms: Some(5000 + 1000 + 10 + 30),
                resets_at_ms: Some(5000 + 1000 + 10 + 30),
            }
        );
        let day_leave = |at: u64| at + DAY_MS + DAY_MS / 100 + 30;
        assert_eq!(
            usage[1],
            LimitUsage::Window {
                limit: 3,
                period_ms: DAY_MS,
                used: 2,
                frees_at_ms: Some(day_leave(1000)),
                resets_at_ms: Some(day_leave(5000)),
            }
        );
        assert!(!usage[0].is_daily() && usage[1].is_daily());
        assert_eq!(usage[1].spelled(), "3/1d");
        // Once the second has passed, the short window is free; the
        // quota still counts both.
        let later = t.usage(7000);
        assert!(matches!(
            later[0],
            LimitUsage::Window {
                used: 0,
                frees_at_ms: None,
                ..
            }
        ));
        assert!(matches!(later[1], LimitUsage::Window { used: 2, .. }));
        // And it agrees with the decision: full exactly when it waits.
        let full = Throttle::with_history(ThrottleSpec::windows(&[(2, 1000)]), 30, vec![0, 100]);
        assert!(
            matches!(full.usage(500)[0], LimitUsage::Window { used: 2, frees_at_ms: Some(f), .. } if f == full.next_allowed(500))
        );
    }

    #[test]
    fn a_bucket_shows_its_level_and_when_it_is_empty() {
        let mut t = Throttle::new(
            ThrottleSpec::parse(&["bucket 2/s burst 50".into()]).unwrap(),
            30,
        );
        for _ in 0..10 {
            t.record(0);
        }
        let [
            LimitUsage::Bucket {
                level,
                burst,
                empty_at_ms,
                ..
            },
        ] = t.usage(0)[..]
        else {
            panic!("{:?}", t.usage(0));
        };
        assert_eq!((level, burst), (10.0, 50));
        // 10 requests at 1.99 a second.
        assert_eq!(empty_at_ms, 5026);
        assert_eq!(t.usage(0)[0].spelled(), "bucket 2/s burst 50");
    }
}
