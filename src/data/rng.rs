//! A small, self-contained random number generator (SplitMix64 seeding a xoshiro256++ stream).
//!
//! Every random choice of the data layer (crops, augmentations, synthetic scenes) draws from an
//! [`Rng`] derived from `(seed, stream, index)`, so results do not depend on thread scheduling.

/// One SplitMix64 step: a well-mixed 64-bit value from a counter.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++: fast, small state, good statistical quality; not cryptographic.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from one 64-bit value.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// An independent generator for item `index` of stream `stream` under `seed` (e.g. sample
    /// `index` of epoch `stream`): the same triple always gives the same sequence.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let mut sm = seed;
        let a = splitmix64(&mut sm);
        let mut sm = a ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let b = splitmix64(&mut sm);
        Self::new(b ^ index.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n); `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform integer in [lo, hi] (inclusive); `hi < lo` gives `lo`.
    pub(crate) fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A standard normal value (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape = `looks`, mean 1): the multiplicative speckle of a `looks`-look SAR intensity.
    pub(crate) fn speckle(&mut self, looks: u32) -> f64 {
        let looks = looks.max(1);
        let mut sum = 0.0;
        for _ in 0..looks {
            sum -= (1.0 - self.f64()).ln();
        }
        sum / f64::from(looks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(1, 2, 3).next_u64()).collect();
        assert!(a.iter().all(|&v| v == a[0]));
        assert_ne!(
            Rng::derive(1, 2, 3).next_u64(),
            Rng::derive(1, 2, 4).next_u64()
        );
        assert_ne!(
            Rng::derive(1, 2, 3).next_u64(),
            Rng::derive(1, 3, 3).next_u64()
        );
        assert_ne!(
            Rng::derive(1, 2, 3).next_u64(),
            Rng::derive(2, 2, 3).next_u64()
        );
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let uniform: f64 = (0..n).map(|_| rng.f64()).sum::<f64>() / n as f64;
        assert!((uniform - 0.5).abs() < 0.02, "{uniform}");
        let normals: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = normals.iter().sum::<f64>() / n as f64;
        let var = normals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let speckle: f64 = (0..n).map(|_| rng.speckle(4)).sum::<f64>() / n as f64;
        assert!((speckle - 1.0).abs() < 0.03, "{speckle}");
        assert!((0..1000).all(|_| rng.below(5) < 5));
        assert!((0..1000).all(|_| (-2..=3).contains(&rng.range_i64(-2, 3))));
    }
}
