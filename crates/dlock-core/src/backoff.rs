//! Pauses between a waiter's looks at the lock.

use std::time::Duration;

/// Jittered exponential back-off: each pause is random in `[3/4 current, current]`, and
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

/// A random pause in `[3/4 pause, pause]`, so that waiters drift apart. A quarter is
/// spread enough for that; a half (as before) made a waiter polling at the 1 s default
/// look 1.33 times a second rather than about once, and an idle waiter on MariaDB or
/// SQLite send 2.1 statements a second over a 10 s wait (issue 14 asks for at most 2).
pub(crate) fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.75 + 0.25 * crate::random::fraction())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_stay_within_three_quarters_and_the_whole() {
        let pause = Duration::from_secs(1);
        for _ in 0..1000 {
            let jittered = jittered(pause);
            assert!(
                jittered >= pause * 3 / 4 && jittered <= pause,
                "{jittered:?}"
            );
        }
    }

    #[test]
    fn the_ramp_doubles_from_ten_milliseconds_up_to_the_cap() {
        let cap = Duration::from_millis(100);
        let mut backoff = Backoff::new(cap);
        let ceilings = [10, 20, 40, 80, 100, 100].map(Duration::from_millis);
        for ceiling in ceilings {
            let pause = backoff.next(cap);
            assert!(
                pause >= ceiling * 3 / 4 && pause <= ceiling,
                "{pause:?} vs {ceiling:?}"
            );
        }
    }
}
