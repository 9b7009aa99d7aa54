//! Latency histograms and the statistics of repeated runs (sans-IO).
//!
//! [`Histogram`] records microseconds in log-linear buckets: exact below 128 µs, then 64
//! buckets per power of two, so a reported percentile is within 1.6 % of the true value.
//! Percentiles take the nearest-rank definition (the smallest recorded value that at
//! least `q` of all values do not exceed), reported as the bucket's upper bound, capped
//! at the maximum seen.

/// Buckets per power of two above the exact range.
const SUB: u64 = 64;
/// Values below this are recorded exactly.
const EXACT: u64 = 2 * SUB;

/// A latency histogram in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The bucket of `v`.
fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    // v >= 128: p = floor(log2 v) >= 7; 64 buckets of width 2^(p-6) in [2^p, 2^(p+1)).
    let p = 63 - u64::from(v.leading_zeros());
    let shift = p - 6;
    let sub = (v >> shift) - SUB; // 0..64
    (EXACT + (p - 7) * SUB + sub) as usize
}

/// The largest value that falls into bucket `b`.
fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT {
        return b;
    }
    let p = (b - EXACT) / SUB + 7;
    let sub = (b - EXACT) % SUB;
    let shift = p - 6;
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    /// Records one value (µs).
    pub fn record(&mut self, us: u64) {
        let b = bucket(us);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q` quantile (0 < q <= 1) in µs; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(b).min(self.max);
            }
        }
        self.max
    }
}

/// The median of `xs` (the mean of the two middle values for an even count); None when
/// empty. NaNs are ignored.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `a[i] / b[i]` for each pair where both exist and `b[i] > 0`.
pub fn pairwise_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev_upper = None;
        for b in 0..2000 {
            let u = upper(b);
            if let Some(p) = prev_upper {
                assert_eq!(bucket(p + 1), b, "bucket after {p}");
            }
            assert_eq!(bucket(u), b);
            prev_upper = Some(u);
        }
        for v in [128u64, 1000, 12_345, 1 << 30, u64::MAX / 4] {
            let u = upper(bucket(v));
            assert!(u >= v && (u - v) as f64 <= v as f64 / 63.0, "{v} -> {u}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000);
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= want && got <= want * 1.016, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 10_000);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in [3, 3, 3, 90] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.75), 3);
        assert_eq!(h.quantile(0.99), 90);
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(100_000);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 100_000);
        assert_eq!(a.quantile(0.5), 20);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(
            pairwise_ratios(&[2.0, 9.0, 1.0], &[1.0, 3.0, 0.0]),
            vec![2.0, 3.0]
        );
    }
}
