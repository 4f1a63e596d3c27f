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

#[cfg(test)]
mod tests {
    use super::*;

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
