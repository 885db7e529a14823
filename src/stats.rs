//! The statistics of the sweep tables and charts: mean, standard deviation and count over seeds, and the
//! paired difference of two methods over seeds with its 95 % Student t interval.
//!
//! Why a t interval paired over seeds (docs/eval.md, "Seeds and confidence intervals"): the
//! seed is what a user re-draws when training again (initialisation, crops, dropout), so it is
//! the unit of replication; two methods of one seed share their teacher and data order, and
//! pairing removes that shared part. A bootstrap over scenes would measure the test set's
//! sampling noise of fixed models instead, and a bootstrap over three seeds has only ten
//! distinct resamples.

/// Mean, sample standard deviation (n - 1) and count of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// `None` for a single value.
    pub sd: Option<f64>,
}

/// The summary of `values`; `None` when there is none.
pub(crate) fn summarize(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (n >= 2).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Some(Summary { n, mean, sd })
}

/// The 0.975 quantile of Student's t distribution with `df` degrees of freedom (`df` >= 1):
/// tabulated to 30, the Cornish-Fisher expansion above (error below 1e-6 there).
pub(crate) fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
        2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
        2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
        2.048407, 2.045230, 2.042272,
    ];
    assert!(df >= 1, "a t quantile needs at least one degree of freedom");
    if df <= TABLE.len() {
        return TABLE[df - 1];
    }
    let z: f64 = 1.959_963_984_540_054;
    let v = df as f64;
    let z3 = z.powi(3);
    let z5 = z.powi(5);
    let z7 = z.powi(7);
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v.powi(3))
        + (79.0 * z.powi(9) + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z)
            / (92160.0 * v.powi(4))
}

/// `a - b` paired by seed, over the seeds where both have a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PairedDifference {
    /// Per seed (the sweep's order): the difference, `None` where either value is missing.
    pub per_seed: Vec<Option<f64>>,
    pub summary: Summary,
    /// The 95 % t interval of the mean difference; `None` with fewer than two pairs.
    pub ci: Option<(f64, f64)>,
}

impl PairedDifference {
    /// Whether the interval excludes 0 (`None`: no interval).
    pub fn distinguishable(&self) -> Option<bool> {
        self.ci.map(|(lo, hi)| lo > 0.0 || hi < 0.0)
    }
}

/// The paired difference `a - b` (values per seed, in the same order); `None` without any pair.
pub(crate) fn paired_difference(a: &[Option<f64>], b: &[Option<f64>]) -> Option<PairedDifference> {
    let per_seed: Vec<Option<f64>> = a.iter().zip(b).map(|(x, y)| Some((*x)? - (*y)?)).collect();
    let diffs: Vec<f64> = per_seed.iter().flatten().copied().collect();
    let summary = summarize(&diffs)?;
    let ci = summary.sd.map(|sd| {
        let half = t_975(summary.n - 1) * sd / (summary.n as f64).sqrt();
        (summary.mean - half, summary.mean + half)
    });
    Some(PairedDifference {
        per_seed,
        summary,
        ci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn summary_by_hand() {
        let s = summarize(&[0.70, 0.74, 0.78]).unwrap();
        // mean 0.74; deviations -0.04, 0, 0.04: sd = sqrt(0.0032 / 2) = 0.04.
        assert_eq!(s.n, 3);
        assert!(close(s.mean, 0.74) && close(s.sd.unwrap(), 0.04));
        let one = summarize(&[0.5]).unwrap();
        assert_eq!((one.n, one.sd), (1, None));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        assert!((t_975(1) - 12.7062).abs() < 1e-4);
        assert!((t_975(2) - 4.3027).abs() < 1e-4);
        assert!((t_975(30) - 2.0423).abs() < 1e-4);
        // Above the table: 2.0395 (31), 2.0003 (60), 1.9799 (120), towards 1.96.
        assert!((t_975(31) - 2.039513).abs() < 1e-5);
        assert!((t_975(60) - 2.000298).abs() < 1e-5);
        assert!((t_975(120) - 1.979930).abs() < 1e-5);
        assert!((t_975(100_000) - 1.959985).abs() < 1e-5);
    }

    #[test]
    fn paired_interval_by_hand() {
        // a - b = 0.04, 0.01, 0.04: mean 0.03, sd sqrt((1e-4 + 4e-4 + 1e-4) / 2) = 0.0173205,
        // standard error 0.01, half-width t(2) * 0.01 = 0.0430265: [-0.0130265, 0.0730265].
        let a = [Some(0.80), Some(0.78), Some(0.83)];
        let b = [Some(0.76), Some(0.77), Some(0.79)];
        let d = paired_difference(&a, &b).unwrap();
        assert_eq!(d.summary.n, 3);
        assert!(close(d.summary.mean, 0.03));
        assert!((d.summary.sd.unwrap() - 0.017_320_508).abs() < 1e-8);
        let (lo, hi) = d.ci.unwrap();
        assert!((lo + 0.013_026_5).abs() < 1e-6 && (hi - 0.073_026_5).abs() < 1e-6);
        assert_eq!(d.distinguishable(), Some(false), "the interval holds 0");
        // 0.05, 0.06, 0.07: mean 0.06, sd 0.01, half-width 4.302653 * 0.01 / sqrt(3) = 0.0248414.
        let c = [Some(0.81), Some(0.83), Some(0.86)];
        let d = paired_difference(&c, &b).unwrap();
        let (lo, hi) = d.ci.unwrap();
        assert!((lo - 0.035_158_6).abs() < 1e-6 && (hi - 0.084_841_4).abs() < 1e-6);
        assert_eq!(d.distinguishable(), Some(true));
    }

    #[test]
    fn pairs_only_seeds_where_both_have_a_value() {
        let a = [Some(0.5), None, Some(0.7)];
        let b = [Some(0.4), Some(0.4), None];
        let d = paired_difference(&a, &b).unwrap();
        assert_eq!(d.summary.n, 1);
        assert!(close(d.per_seed[0].unwrap(), 0.1));
        assert_eq!((d.per_seed[1], d.per_seed[2], d.ci), (None, None, None));
        assert_eq!(d.distinguishable(), None);
        assert!(paired_difference(&[None], &[Some(1.0)]).is_none());
    }
}
