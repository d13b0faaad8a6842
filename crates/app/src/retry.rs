//! When a failed delivery is tried again: exponential backoff with jitter that honours the
//! receiver's `Retry-After`, until the retry horizon, when the job is given up (dead).

use std::time::Duration;

use agentnexus_store::Next;
use chrono::{DateTime, Utc};
use rand::Rng;

/// When to try again after a failed attempt.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    /// Delay after the first failure; it doubles with each further one.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
    /// After this long since the job was queued, it is given up (dead).
    pub horizon: Duration,
}

impl RetrySchedule {
    /// The next step after `attempts` failed attempts: a time ±25 % around the backoff (never
    /// before what `Retry-After` asked), or dead past the horizon.
    pub fn next(
        &self,
        attempts: i64,
        retry_after: Option<Duration>,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Next {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let backoff = self.base.saturating_mul(2u32.saturating_pow(doublings));
        let jittered = backoff
            .mul_f64(rand::rng().random_range(0.75..1.25))
            .min(self.max);
        let delay = retry_after.map_or(jittered, |r| r.max(jittered));
        let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let horizon = chrono::Duration::from_std(self.horizon).unwrap_or(chrono::Duration::MAX);
        if at > created_at + horizon {
            Next::Dead
        } else {
            Next::RetryAt(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_honours_retry_after_and_gives_up() {
        let s = RetrySchedule {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            horizon: Duration::from_secs(86_400),
        };
        let now = Utc::now();
        let delay = |n, ra| match s.next(n, ra, now, now) {
            Next::RetryAt(at) => (at - now).num_milliseconds(),
            other => panic!("{other:?}"),
        };
        assert!((7_500..=12_500).contains(&delay(1, None)));
        assert!((30_000..=50_000).contains(&delay(3, None)));
        assert!(delay(30, None) <= 4_500_000, "capped");
        assert!(delay(1, Some(Duration::from_secs(120))) >= 120_000);
        assert_eq!(
            s.next(5, None, now - chrono::Duration::hours(24), now),
            Next::Dead
        );
    }
}
