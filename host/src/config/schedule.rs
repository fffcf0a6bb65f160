//! Schedule expressions: intervals (`every 30s`, `every 5m`, `every 2h`,
//! `every 1d`) and cron expressions in UTC (`cron 0 9 * * 1-5`).

use std::time::Duration;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// A fixed interval, first firing one interval after start.
    Every(Duration),
    /// A five-field cron expression (minute hour day-of-month month
    /// day-of-week), evaluated in UTC. Kept as text; it was checked when
    /// the config was read.
    Cron(String),
}

impl ScheduleSpec {
    /// The next time this schedule fires after `now`.
    pub fn next_after(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            ScheduleSpec::Every(period) => {
                chrono::Duration::from_std(*period).ok().map(|d| now + d)
            }
            ScheduleSpec::Cron(expr) => expr
                .parse::<croner::Cron>()
                .ok()?
                .find_next_occurrence(&now, false)
                .ok(),
        }
    }
}

/// A duration such as `30s`, `5m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_schedule(&format!("every {text}")) {
        Ok(ScheduleSpec::Every(d)) => Ok(d),
        _ => Err(format!(
            "`{}` is not a duration; write N followed by s, m, h or d, such as 30m",
            text.escape_debug()
        )),
    }
}

/// The shortest interval: a schedule is a trigger for bot logic, not a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Reads `every N<s|m|h|d>` or `cron` with five fields; the error says
/// which forms are accepted.
pub fn parse_schedule(spec: &str) -> Result<ScheduleSpec, String> {
    let usage = || {
        format!(
            "`{}` is not a schedule; write `every N` followed by s, m, h or d, such as `every 5m`, or `cron` and five fields, such as `cron 0 9 * * 1-5`",
            spec.escape_debug()
        )
    };
    if let Some(expr) = spec.trim().strip_prefix("cron ") {
        let expr = expr.trim();
        if expr.split_whitespace().count() != 5 {
            return Err(format!(
                "`{}` needs five cron fields: minute hour day-of-month month day-of-week (UTC)",
                spec.escape_debug()
            ));
        }
        return match expr.parse::<croner::Cron>() {
            Ok(_) => Ok(ScheduleSpec::Cron(expr.to_string())),
            Err(e) => Err(format!(
                "`{}` is not a cron expression: {e}",
                spec.escape_debug()
            )),
        };
    }
    let rest = spec.trim().strip_prefix("every").ok_or_else(usage)?.trim();
    let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (number, unit) = rest.split_at(split);
    let n: u64 = number.parse().map_err(|_| usage())?;
    let secs_per_unit = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(usage()),
    };
    let secs = n.checked_mul(secs_per_unit).ok_or_else(usage)?;
    let interval = Duration::from_secs(secs);
    if interval < MIN_INTERVAL {
        return Err(format!("`{spec}` is shorter than the minimum of 1s"));
    }
    Ok(ScheduleSpec::Every(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_intervals() {
        assert_eq!(
            parse_schedule("every 5m"),
            Ok(ScheduleSpec::Every(Duration::from_secs(300)))
        );
        assert_eq!(
            parse_schedule(" every 30 seconds "),
            Ok(ScheduleSpec::Every(Duration::from_secs(30)))
        );
        assert_eq!(
            parse_schedule("every 1d"),
            Ok(ScheduleSpec::Every(Duration::from_secs(86_400)))
        );
    }

    #[test]
    fn parses_cron_in_utc() {
        let spec = parse_schedule("cron 30 9 * * 1-5").unwrap();
        assert_eq!(spec, ScheduleSpec::Cron("30 9 * * 1-5".into()));
        // Friday 2026-11-20 10:00 UTC: next is Monday 09:30.
        let friday = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let next = spec.next_after(friday).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-23T09:30:00+00:00");
        let every = parse_schedule("every 5m").unwrap();
        assert_eq!(
            (every.next_after(friday).unwrap() - friday).num_seconds(),
            300
        );
    }

    #[test]
    fn refuses_bad_cron() {
        for bad in [
            "cron",
            "cron * * *",
            "cron 61 * * * *",
            "cron a b c d e",
            "cron * * * * * *",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("30m").is_ok());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "every",
            "5m",
            "every m",
            "every 0s",
            "every 5 fortnights",
            "every 99999999999999999999d",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
