//! Retry backoff: exponential, capped, with jitter.

use std::time::Duration;

/// The delay before attempt `next_attempt` (2, 3, …): `base · 2^(n-2)`, capped at `max`, then
/// scaled by a random factor in [0.5, 1.0] so retries of many runs spread out.
pub fn retry_delay(base: Duration, max: Duration, next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    let factor = 0.5 + rand::random::<f64>() * 0.5;
    raw.mul_f64(factor)
}

/// How long a message this node cannot handle (its function version is not loaded here) waits
/// before it is handled again, by how often it has been delivered: 500 ms, doubling, up to
/// `cap` (the stuck-message delay). Soon at first, for a node that has the version to take it
/// during a rolling change; rarely once no node seems to have it.
pub fn handback_delay(redeliveries: u32, cap: Duration) -> Duration {
    super::TRANSIENT_ERROR_DELAY
        .saturating_mul(1u32 << redeliveries.min(20))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handbacks_start_soon_and_back_off_to_the_cap() {
        let cap = Duration::from_secs(30);
        assert_eq!(handback_delay(0, cap), Duration::from_millis(500));
        assert_eq!(handback_delay(1, cap), Duration::from_secs(1));
        assert_eq!(handback_delay(5, cap), Duration::from_secs(16));
        assert_eq!(handback_delay(6, cap), cap);
        assert_eq!(handback_delay(u32::MAX, cap), cap);
    }

    #[test]
    fn grows_exponentially_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let d2 = retry_delay(base, max, 2);
            assert!(d2 >= Duration::from_millis(500) && d2 <= base, "{d2:?}");
            let d4 = retry_delay(base, max, 4);
            assert!(
                d4 >= Duration::from_secs(2) && d4 <= Duration::from_secs(4),
                "{d4:?}"
            );
            assert!(retry_delay(base, max, 40) <= max);
        }
    }
}
