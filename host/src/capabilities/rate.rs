//! A token bucket for per-plugin budgets (log lines, broadcasts).

use std::time::{Duration, Instant};

/// Up to `capacity` tokens, refilled continuously; each use takes one.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `capacity` tokens at most, refilled at `per_second`.
    pub fn new(capacity: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            capacity: capacity as f64,
            per_second,
            tokens: capacity as f64,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.per_second <= 0.0 {
            Err(Duration::MAX)
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_then_refills() {
        let start = Instant::now();
        let mut b = TokenBucket::new(2, 1.0);
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_ok());
        let wait = b.take(start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(b.take(start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut b = TokenBucket::new(0, 0.0);
        assert_eq!(b.take(Instant::now()), Err(Duration::MAX));
    }
}
