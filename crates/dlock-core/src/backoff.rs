//! Pauses between a waiter's looks at the lock.

use std::time::Duration;

/// Jittered exponential back-off: each pause is random in `[current / 2, current]`, and
/// `current` doubles from 10 ms up to the cap of the moment.
#[derive(Debug)]
pub(crate) struct Backoff {
    current: Duration,
}

/// The first pause, before jitter.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(10);

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            current: FIRST_PAUSE.min(cap),
        }
    }

    pub(crate) fn next(&mut self, cap: Duration) -> Duration {
        let pause = jittered(self.current.min(cap));
        self.current = (self.current * 2).min(cap);
        pause
    }
}

/// A random pause in `[pause / 2, pause]`, so that waiters drift apart.
pub(crate) fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + 0.5 * crate::random::fraction())
}
