//! Randomness for owner ids and back-off jitter.
//!
//! The standard library's `RandomState` is seeded from the operating system's random
//! source; hashing a counter with fresh states gives unpredictable 64-bit values without a
//! dependency. Owner ids need uniqueness, not cryptographic strength.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The process id too: a process that forks after drawing ids gives parent and child
    // the same hash keys and counter, and so, without it, the same owner ids.
    let draw = (COUNTER.fetch_add(1, Ordering::Relaxed), std::process::id());
    RandomState::new().hash_one(draw)
}

/// How long an owner id is: 128 bits in hex.
pub(crate) const OWNER_ID_LEN: usize = 32;

/// A new id for one acquisition: 128 random bits in hex ([`OWNER_ID_LEN`] digits).
pub(crate) fn owner_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// A uniformly random fraction in `[0, 1)`.
pub(crate) fn fraction() -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    #[allow(clippy::cast_precision_loss)]
    let numerator = (random_u64() >> 11) as f64;
    numerator / (1u64 << 53) as f64
}

/// A uniformly random index below `n` (which must not be 0), as far as a 64-bit draw
/// modulo `n` is uniform: for the small `n` it picks among, a bias below 2^-50.
pub(crate) fn below(n: usize) -> usize {
    let n64 = u64::try_from(n).unwrap_or(u64::MAX).max(1);
    usize::try_from(random_u64() % n64).unwrap_or(0)
}

/// `items` in a random order (Fisher–Yates).
pub(crate) fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| owner_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }

    #[test]
    fn fractions_stay_in_range_and_spread() {
        let samples: Vec<f64> = (0..1000).map(|_| fraction()).collect();
        assert!(samples.iter().all(|f| (0.0..1.0).contains(f)));
        assert!(samples.iter().any(|f| *f < 0.25) && samples.iter().any(|f| *f > 0.75));
    }
}
