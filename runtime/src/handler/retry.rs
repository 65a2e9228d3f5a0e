//! [`RetryPolicy`] and [`Backoff`]: how often and how patiently a failed async delivery
//! is retried.

use std::time::Duration;

/// How the delay between retries grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `base`, `2 × base`, `3 × base`, …
    Linear,
    /// `base`, `2 × base`, `4 × base`, …
    Exponential,
}

impl std::str::FromStr for Backoff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" | "constant" => Ok(Self::Fixed),
            "linear" => Ok(Self::Linear),
            "exponential" => Ok(Self::Exponential),
            other => Err(format!("unknown backoff `{other}`; expected `fixed`, `linear` or `exponential`")),
        }
    }
}

/// How often and how patiently a failed async delivery is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Whether a random amount (below the delay itself, which is already capped at
    /// `max_delay`) is added to each delay, so retries of many events spread out.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Sets the number of attempts (the first included).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first delay.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the longest delay.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The delay after failed attempt number `attempt` (from 1) and before the next one:
    /// the `attempt`-th of [`RetryPolicy::delays`], or `max_delay` past their end.
    pub fn delay_before_retry(&self, attempt: u32) -> Duration {
        let n = attempt.saturating_sub(1) as usize;
        self.delays().nth(n).unwrap_or(self.max_delay)
    }

    /// The delays before each retry, in order (`max_attempts - 1` of them).
    ///
    /// The exponential and fixed schedules come from the `backon` crate. Each delay is
    /// first capped at [`max_delay`](Self::max_delay); jitter then adds a random amount
    /// below that delay (so a jittered delay lies in `[d, 2d)`), and every delay is
    /// rounded to whole microseconds so float rounding never shows up as `200.000003ms`.
    pub fn delays(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        use backon::BackoffBuilder;
        let retries = self.max_attempts.saturating_sub(1) as usize;
        let (base, max, jitter) = (self.base, self.max_delay, self.jitter);
        let steps: Box<dyn Iterator<Item = Duration> + Send> = match self.backoff {
            Backoff::Fixed => {
                Box::new(backon::ConstantBuilder::default().with_delay(base.min(max)).with_max_times(retries).build())
            }
            Backoff::Exponential => Box::new(
                backon::ExponentialBuilder::default()
                    .with_min_delay(base.min(max))
                    .with_max_delay(max)
                    .with_factor(2.0)
                    .with_max_times(retries)
                    .build(),
            ),
            // backon has no linear schedule.
            Backoff::Linear => Box::new((1..=retries as u32).map(move |i| base.saturating_mul(i).min(max))),
        };
        Box::new(steps.map(move |d| {
            let d = if jitter { d.saturating_add(d.mul_f64(fastrand::f64())) } else { d };
            Duration::from_micros((d.as_nanos() as f64 / 1000.0).round() as u64)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_delays_double_up_to_the_cap() {
        let p = RetryPolicy::default()
            .max_attempts(5)
            .base(Duration::from_millis(100))
            .max_delay(Duration::from_millis(300))
            .jitter(false);
        let d: Vec<_> = p.delays().collect();
        assert_eq!(d, [100, 200, 300, 300].map(Duration::from_millis));
    }

    #[test]
    fn linear_and_fixed_delays() {
        let p = RetryPolicy::default().backoff(Backoff::Linear).max_attempts(4).jitter(false);
        assert_eq!(p.delays().collect::<Vec<_>>(), [100, 200, 300].map(Duration::from_millis));
        let p = RetryPolicy::default().backoff(Backoff::Fixed).max_attempts(3).jitter(false);
        assert_eq!(p.delays().collect::<Vec<_>>(), [100, 100].map(Duration::from_millis));
        assert_eq!(RetryPolicy::none().delays().count(), 0);
    }

    #[test]
    fn jittered_delays_stay_within_bounds() {
        for backoff in [Backoff::Exponential, Backoff::Linear, Backoff::Fixed] {
            let plain = RetryPolicy::default()
                .backoff(backoff)
                .max_attempts(6)
                .base(Duration::from_millis(100))
                .max_delay(Duration::from_millis(250))
                .jitter(false);
            let fixed: Vec<_> = plain.delays().collect();
            assert_eq!(fixed.len(), 5);
            assert!(fixed.iter().all(|d| *d <= Duration::from_millis(250)), "{backoff:?}: {fixed:?}");
            let jittered = plain.clone().jitter(true);
            // Over many draws, every delay stays in [d, 2d) and at least one differs from d.
            let mut spread = false;
            for _ in 0..50 {
                for (d, j) in fixed.iter().zip(jittered.delays()) {
                    assert!(j >= *d && j < *d * 2, "{backoff:?}: {j:?} outside [{d:?}, 2×{d:?})");
                    spread |= j != *d;
                }
            }
            assert!(spread, "{backoff:?}: jitter never changed a delay");
        }
    }

    #[test]
    fn backoff_parses_its_names() {
        assert_eq!("exponential".parse::<Backoff>(), Ok(Backoff::Exponential));
        assert!("quadratic".parse::<Backoff>().unwrap_err().contains("expected `fixed`"));
    }
}
