//! A smoothed bytes-per-second estimate, so the ETA does not jump with every write.

/// Weight of the newest sample; low enough to smooth bursts from page-cache flushes.
const ALPHA: f64 = 0.3;
/// Samples closer together than this carry too little information to use.
const MIN_INTERVAL_US: u64 = 200_000;

#[derive(Debug, Default)]
pub struct RateEstimator {
    last: Option<(u64, u64)>,
    rate: f64,
}

impl RateEstimator {
    /// Feeds the byte count seen at `now_us`; returns the current estimate in bytes/s.
    pub fn update(&mut self, now_us: u64, bytes: u64) -> u64 {
        match self.last {
            None => self.last = Some((now_us, bytes)),
            Some((t0, b0)) if now_us >= t0 + MIN_INTERVAL_US && bytes >= b0 => {
                let sample = (bytes - b0) as f64 * 1e6 / (now_us - t0) as f64;
                self.rate = if self.rate == 0.0 {
                    sample
                } else {
                    ALPHA * sample + (1.0 - ALPHA) * self.rate
                };
                self.last = Some((now_us, bytes));
            }
            Some((_, b0)) if bytes < b0 => {
                // A new phase (e.g. verify after write) counts from zero again.
                self.last = Some((now_us, bytes));
                self.rate = 0.0;
            }
            Some(_) => {}
        }
        self.rate as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stream_converges_to_its_rate() {
        let mut r = RateEstimator::default();
        let mut rate = 0;
        for i in 0..20u64 {
            rate = r.update(i * 500_000, i * 5_000_000);
        }
        assert_eq!(rate, 10_000_000);
    }

    #[test]
    fn ignores_too_close_samples_and_restarts_on_reset() {
        let mut r = RateEstimator::default();
        r.update(0, 0);
        assert_eq!(r.update(1_000, 1_000_000), 0);
        assert!(r.update(1_000_000, 1_000_000) > 0);
        assert_eq!(r.update(2_000_000, 10), 0);
    }
}
