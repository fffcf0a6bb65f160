//! Schedule expressions: `every 30s`, `every 5m`, `every 2h`, `every 1d`.

use std::time::Duration;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// A fixed interval, first firing one interval after start.
    Every(Duration),
}

/// The shortest interval: a schedule is a trigger for bot logic, not a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub fn parse_schedule(spec: &str) -> Result<ScheduleSpec, String> {
    let usage = || {
        format!(
            "`{}` is not a schedule; write `every N` followed by s, m, h or d, such as `every 5m`",
            spec.escape_debug()
        )
    };
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
