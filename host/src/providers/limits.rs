//! A provider endpoint's documented rate limits, as data: [`Limit`] and
//! [`ThrottleSpec`], their text form (`"1/30m"`, `"bucket 2/s burst 50"`)
//! and the operator's `providers.X.throttle` override.
//!
//! Each provider states its endpoints' limits here
//! (`Provider::default_throttle`); `delivery::throttle` enforces them.
//! Keeping the data apart from the algorithm lets providers describe their
//! limits without importing delivery.

use std::fmt;

use crate::config::ConfigIssue;

/// One documented limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// At most `count` requests in any `period_ms`.
    Window {
        /// Requests allowed in the window.
        count: u32,
        /// The window's length.
        period_ms: u64,
    },
    /// A bucket of `burst` that drains `per_second`; each request adds one.
    LeakyBucket {
        /// How fast the bucket drains, in requests per second.
        per_second: f64,
        /// How many requests the bucket holds.
        burst: u32,
    },
    /// At most `seconds` of the provider's own execution time, as its
    /// answers report it, in any `period_ms` (Bitrix24: 480 s per method
    /// in 10 minutes, from each answer's `time.operating`).
    Budget {
        /// Execution seconds allowed in the window.
        seconds: u32,
        /// The window's length.
        period_ms: u64,
    },
    /// At most `count` requests per calendar day in the time zone
    /// `utc_offset_minutes` east of UTC: the quota resets at that zone's
    /// midnight, as a provider that counts its day by the calendar resets
    /// it. Written `3/day utc` or `3/day utc+08:00`.
    PerDay {
        /// Requests allowed in one calendar day.
        count: u32,
        /// The zone's offset from UTC, in minutes (east positive).
        utc_offset_minutes: i32,
    },
}

/// A day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

/// The most a zone's offset may be from UTC, in minutes (UTC+14:00 is
/// the furthest any zone is).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 14 * 60;

/// Spells a zone offset as the text form writes it: `utc`, `utc+08:00`.
pub fn show_zone(utc_offset_minutes: i32) -> String {
    if utc_offset_minutes == 0 {
        return "utc".into();
    }
    let sign = if utc_offset_minutes < 0 { '-' } else { '+' };
    let abs = utc_offset_minutes.unsigned_abs();
    format!("utc{sign}{:02}:{:02}", abs / 60, abs % 60)
}

fn parse_zone(text: &str) -> Option<i32> {
    let rest = text.trim().strip_prefix("utc")?;
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if !(0..60).contains(&minutes) {
        return None;
    }
    let offset = sign * (hours * 60 + minutes);
    (offset.abs() <= MAX_UTC_OFFSET_MINUTES).then_some(offset)
}

/// All limits of one endpoint. Empty means unthrottled (the console).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThrottleSpec {
    /// Every limit; a request must fit all of them.
    pub limits: Vec<Limit>,
}

impl fmt::Display for ThrottleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limits.is_empty() {
            return f.write_str("unthrottled");
        }
        let parts: Vec<String> = self
            .limits
            .iter()
            .map(|l| match l {
                Limit::Window { count, period_ms } => {
                    format!("{count}/{}", show_period(*period_ms))
                }
                Limit::LeakyBucket { per_second, burst } => {
                    format!("bucket {per_second}/s burst {burst}")
                }
                Limit::Budget { seconds, period_ms } => {
                    format!("budget {seconds}s/{}", show_period(*period_ms))
                }
                Limit::PerDay {
                    count,
                    utc_offset_minutes,
                } => format!("{count}/day {}", show_zone(*utc_offset_minutes)),
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

fn show_period(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl ThrottleSpec {
    /// Only windows: `(count, period_ms)` pairs.
    pub fn windows(pairs: &[(u32, u64)]) -> ThrottleSpec {
        ThrottleSpec {
            limits: pairs
                .iter()
                .map(|(count, period_ms)| Limit::Window {
                    count: *count,
                    period_ms: *period_ms,
                })
                .collect(),
        }
    }

    /// Windows, then a quota per UTC calendar day (`count/day utc`).
    pub fn windows_and_utc_day(pairs: &[(u32, u64)], per_day: u32) -> ThrottleSpec {
        let mut spec = ThrottleSpec::windows(pairs);
        spec.limits.push(Limit::PerDay {
            count: per_day,
            utc_offset_minutes: 0,
        });
        spec
    }

    /// The longest window, which is how much send history must be kept.
    pub fn horizon_ms(&self) -> u64 {
        self.limits
            .iter()
            .map(|l| match l {
                Limit::Window { period_ms, .. } => *period_ms,
                Limit::LeakyBucket { per_second, burst } => {
                    (*burst as f64 / per_second.max(0.001) * 1000.0) as u64
                }
                Limit::Budget { period_ms, .. } => *period_ms,
                // The day's start is at most a day back, and a send just
                // before it may still count (its arrival margin): two days
                // cover both whatever the margin.
                Limit::PerDay { .. } => 2 * DAY_MS,
            })
            .max()
            .unwrap_or(0)
    }

    /// Parses an operator override: a list such as `["1/30m", "3/1d"]`, or
    /// `["bucket 2/s burst 50"]`.
    pub fn parse(items: &[String]) -> Result<ThrottleSpec, String> {
        let mut limits = Vec::new();
        for item in items {
            limits.push(parse_limit(item)?);
        }
        Ok(ThrottleSpec { limits })
    }
}

fn parse_period(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = if n.is_empty() { 1 } else { n.parse().ok()? };
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

fn parse_limit(item: &str) -> Result<Limit, String> {
    let usage = || {
        format!(
            "`{}` is not a limit; write `N/PERIOD` such as `1/30m` or `3/1d`, `N/day ZONE` such as `3/day utc`, `bucket 2/s burst 50`, or `budget 480s/10m`",
            item.escape_debug()
        )
    };
    if let Some(rest) = item.trim().strip_prefix("budget") {
        // `budget 480s/10m`: execution seconds per window.
        let (seconds, period) = rest.trim().split_once('/').ok_or_else(usage)?;
        let seconds: u32 = seconds
            .trim()
            .strip_suffix('s')
            .ok_or_else(usage)?
            .trim()
            .parse()
            .map_err(|_| usage())?;
        let period_ms = parse_period(period).ok_or_else(usage)?;
        if seconds == 0 {
            return Err(usage());
        }
        return Ok(Limit::Budget { seconds, period_ms });
    }
    if let Some(rest) = item.trim().strip_prefix("bucket") {
        let (rate, burst) = rest.split_once("burst").ok_or_else(usage)?;
        let (count, period) = rate.trim().split_once('/').ok_or_else(usage)?;
        let count: f64 = count.trim().parse().map_err(|_| usage())?;
        let period_ms = parse_period(period).ok_or_else(usage)?;
        let burst: u32 = burst.trim().parse().map_err(|_| usage())?;
        if count <= 0.0 || burst == 0 {
            return Err(usage());
        }
        return Ok(Limit::LeakyBucket {
            per_second: count * 1000.0 / period_ms as f64,
            burst,
        });
    }
    let (count, period) = item.split_once('/').ok_or_else(usage)?;
    let count: u32 = count.trim().parse().map_err(|_| usage())?;
    if let Some(zone) = period.trim().strip_prefix("day") {
        // `3/day utc`: per calendar day, which needs its zone.
        let utc_offset_minutes = parse_zone(zone).ok_or_else(|| {
            format!(
                "`{}`: a calendar day needs its zone: write `{count}/day utc` or `{count}/day utc+08:00` (or `{count}/1d` for any rolling 24 hours)",
                item.escape_debug()
            )
        })?;
        if count == 0 {
            return Err(usage());
        }
        return Ok(Limit::PerDay {
            count,
            utc_offset_minutes,
        });
    }
    let period_ms = parse_period(period).ok_or_else(usage)?;
    if count == 0 {
        return Err(usage());
    }
    Ok(Limit::Window { count, period_ms })
}

/// The key of a provider account's throttle override, read by the
/// registry for every kind.
pub const THROTTLE_KEY: &str = "throttle";

/// Reads `providers.X.throttle` (its table is `options`, its key `key`)
/// for `endpoint`: a list for every endpoint, or a table of lists by
/// endpoint name. `None`: no override, the provider's defaults apply.
pub fn throttle_override(
    options: &toml::Table,
    endpoint: &str,
    key: &str,
) -> Result<Option<ThrottleSpec>, ConfigIssue> {
    let list = match options.get(THROTTLE_KEY) {
        None => return Ok(None),
        Some(toml::Value::Array(items)) => Some(items),
        Some(toml::Value::Table(t)) => match t.get(endpoint) {
            Some(toml::Value::Array(items)) => Some(items),
            Some(_) => {
                return Err(ConfigIssue {
                    key: format!("{key}.throttle.{endpoint}"),
                    message: "must be a list such as [\"1/30m\", \"3/1d\"]".into(),
                });
            }
            None => None,
        },
        Some(_) => {
            return Err(ConfigIssue {
                key: format!("{key}.throttle"),
                message: "must be a list of limits, or a table of lists by endpoint".into(),
            });
        }
    };
    let Some(items) = list else { return Ok(None) };
    let strings: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| ConfigIssue {
            key: format!("{key}.throttle"),
            message: "limits must be strings such as \"1/30m\"".into(),
        })?;
    ThrottleSpec::parse(&strings)
        .map(Some)
        .map_err(|message| ConfigIssue {
            key: format!("{key}.throttle"),
            message,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_overrides() {
        let spec = ThrottleSpec::parse(&["1/30m".into(), "3/1d".into()]).unwrap();
        assert_eq!(
            spec,
            ThrottleSpec::windows(&[(1, 30 * 60_000), (3, 86_400_000)])
        );
        assert_eq!(spec.to_string(), "1/30m, 3/1d");
        let bucket = ThrottleSpec::parse(&["bucket 2/s burst 50".into()]).unwrap();
        assert_eq!(
            bucket.limits,
            vec![Limit::LeakyBucket {
                per_second: 2.0,
                burst: 50
            }]
        );
        assert_eq!(
            ThrottleSpec::parse(&["5/s".into()]).unwrap(),
            ThrottleSpec::windows(&[(5, 1000)])
        );
        let budget = ThrottleSpec::parse(&["budget 480s/10m".into()]).unwrap();
        assert_eq!(
            budget.limits,
            vec![Limit::Budget {
                seconds: 480,
                period_ms: 600_000
            }]
        );
        assert_eq!(budget.to_string(), "budget 480s/10m");
        let daily = ThrottleSpec::parse(&["3/day utc".into(), "50/day utc+08:00".into()]).unwrap();
        assert_eq!(
            daily.limits,
            vec![
                Limit::PerDay {
                    count: 3,
                    utc_offset_minutes: 0
                },
                Limit::PerDay {
                    count: 50,
                    utc_offset_minutes: 480
                }
            ]
        );
        assert_eq!(daily.to_string(), "3/day utc, 50/day utc+08:00");
        assert_eq!(
            ThrottleSpec::parse(&["1/day utc-05:30".into()])
                .unwrap()
                .limits,
            vec![Limit::PerDay {
                count: 1,
                utc_offset_minutes: -330
            }]
        );
        for bad in [
            "",
            "0/1s",
            "1/",
            "1/fortnight",
            "bucket 2/s",
            "three/1d",
            "budget 480/10m",
            "budget 0s/10m",
            "3/day",
            "3/day cet",
            "3/day utc+15",
            "3/day utc+08:60",
            "0/day utc",
        ] {
            assert!(ThrottleSpec::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
