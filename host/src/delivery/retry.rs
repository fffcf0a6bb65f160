//! When to try a message again.

use rand::Rng;

/// When a transient failure is retried, and when it is given up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The first retry's delay.
    pub base_ms: u64,
    /// The longest delay between retries.
    pub max_backoff_ms: u64,
    /// Provider calls per message before it fails.
    pub max_attempts: u32,
    /// Age after which a message that keeps failing is given up.
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1000,
            max_backoff_ms: 5 * 60_000,
            max_attempts: 10,
            max_age_ms: 24 * 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with ±20% jitter, so hosts and messages that
    /// failed together do not retry in lockstep. A provider's own hint wins
    /// when it asks for longer.
    pub fn delay_ms(&self, attempts: u32, hint_ms: Option<u64>) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
            .min(self.max_backoff_ms);
        let jitter = rand::rng().random_range(0.8..1.2);
        let backoff = (exp as f64 * jitter) as u64;
        backoff.max(hint_ms.unwrap_or(0))
    }

    /// Whether a message that failed `attempts` times and is `age_ms` old is given up.
    pub fn gives_up(&self, attempts: u32, age_ms: u64) -> bool {
        attempts >= self.max_attempts || age_ms >= self.max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_respects_hints() {
        let p = RetryPolicy::default();
        let first = p.delay_ms(1, None);
        assert!((800..=1200).contains(&first), "{first}");
        let fourth = p.delay_ms(4, None);
        assert!((6400..=9600).contains(&fourth), "{fourth}");
        assert!(p.delay_ms(30, None) <= 360_000);
        assert_eq!(p.delay_ms(1, Some(60_000)), 60_000);
        assert!(p.gives_up(10, 0));
        assert!(p.gives_up(1, 24 * 3_600_000));
        assert!(!p.gives_up(3, 1000));
    }
}
