//! Each scene's inputs measured against the normalisation a model was trained with, from the
//! values read anyway: per modality and band, where the scene's valid values lie in standard
//! deviations of the training statistics (the offset of their mean) and how widely they spread
//! (their sd over the training's). Values in another bit depth, unit or scale than the training
//! data's spread tens to hundreds of times as wide (or lie hundreds of sd off) and are refused; a
//! scene merely unlike the training data gets a warning. docs/data.md ("Inputs unlike the
//! training data") gives the bounds and the measurements they were chosen from.

use anyhow::{bail, Result};
use std::path::PathBuf;

use super::normalise::Normaliser;
use super::raster::Pixels;
use super::stats::Moments;

/// A warning when a band's mean lies more than this many training sds from the training mean.
pub(crate) const WARN_OFFSET_SD: f64 = 3.0;
/// A warning when a band's values spread more than this many times as wide as the training's.
pub(crate) const WARN_SPREAD: f64 = 3.0;
/// A warning when a band's values spread less than this fraction of the training's while their
/// mean lies more than [`NARROW_OFFSET_SD`] away: the whole scene squeezed off to one side (a
/// narrow scene near the training mean, such as flat ground in a DSM, passes).
pub(crate) const NARROW_SPREAD: f64 = 0.1;
/// See [`NARROW_SPREAD`].
pub(crate) const NARROW_OFFSET_SD: f64 = 2.0;
/// A refusal when a band's values spread more than this many times as wide as the training's:
/// a multiplicative difference (x16 for 12 bits, x100 for centimetres, x257 for 16 bits), which
/// a scene of the same kind does not reach (a cloudy scene against the statistics of one clear
/// patch spreads 6x).
pub(crate) const REFUSE_SPREAD: f64 = 10.0;
/// A refusal when a band's mean lies more than this many training sds from the training mean
/// (an offset that no scene of the same kind shows: that cloudy scene lies 35 sd off).
pub(crate) const REFUSE_OFFSET_SD: f64 = 100.0;
/// Valid pixels of a modality measured before a refusal is decided ahead of the scene's end.
const EARLY_PIXELS: u64 = 4096;

/// How a band of a scene departs from the training statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Departure {
    /// (scene mean - training mean) / training sd.
    pub(crate) offset: f64,
    /// Scene sd / training sd.
    pub(crate) spread: f64,
}

/// What a departure calls for, from none to a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    Fits,
    Warn,
    Refuse,
}

impl Departure {
    /// The verdict of the bounds above.
    pub(crate) fn verdict(&self) -> Verdict {
        let offset = self.offset.abs();
        let narrow = self.spread < NARROW_SPREAD && offset > NARROW_OFFSET_SD;
        if offset > REFUSE_OFFSET_SD || self.spread > REFUSE_SPREAD {
            Verdict::Refuse
        } else if offset > WARN_OFFSET_SD || self.spread > WARN_SPREAD || narrow {
            Verdict::Warn
        } else {
            Verdict::Fits
        }
    }

    /// How far off, for choosing the worst band: the larger of the offset and the spread.
    fn size(&self) -> f64 {
        self.offset.abs().max(self.spread)
    }

    /// The likely cause of the departure's pattern.
    fn cause(&self) -> &'static str {
        if self.spread > WARN_SPREAD {
            "another bit depth (8-bit data stretched to 16 bits is x257, to 12 bits x16), other \
             units (centimetres for metres is x100) or a scale the file does not declare (GDAL's \
             scale and offset are applied; a product's own, such as reflectance x 10000, is not)"
        } else if self.spread < NARROW_SPREAD {
            "a quantity on another scale, squeezed into a narrow range: SAR backscatter in linear \
             power or amplitude where the model was trained in dB (10 log10), or the like"
        } else {
            "other units or another reference (say elevations above sea level for heights above \
             ground), another sensor or processing level, or conditions (clouds, snow, season) \
             the training data lacked"
        }
    }
}

/// One band of a scene so far: the moments of its valid values in training sds, and their
/// smallest and largest value as read.
#[derive(Debug, Clone, Copy)]
struct BandSurvey {
    z: Moments,
    min: f64,
    max: f64,
}

impl Default for BandSurvey {
    fn default() -> Self {
        Self {
            z: Moments::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// One input of a scene: its modality, file, the training statistics and its bands so far.
#[derive(Debug, Clone)]
struct InputSurvey {
    modality: String,
    file: PathBuf,
    mean: Vec<f64>,
    std: Vec<f64>,
    bands: Vec<BandSurvey>,
}

impl InputSurvey {
    fn departure(&self, b: usize) -> Departure {
        let z = &self.bands[b].z;
        Departure {
            offset: z.mean,
            spread: z.std(),
        }
    }

    /// The band that departs most (highest verdict, then farthest), once it has valid pixels.
    fn worst(&self) -> Option<(usize, Departure)> {
        (0..self.bands.len())
            .filter(|&b| self.bands[b].z.count > 0)
            .map(|b| (b, self.departure(b)))
            .max_by(|(_, x), (_, y)| {
                (x.verdict(), x.size())
                    .partial_cmp(&(y.verdict(), y.size()))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    }

    /// What the worst band holds, what the training statistics expect, and the likely cause.
    fn describe(&self, b: usize, d: &Departure) -> String {
        let band = &self.bands[b];
        let (mean, std) = (self.mean[b], self.std[b]);
        let observed_mean = mean + d.offset * std;
        format!(
            "{} (modality {}) is unlike the data the checkpoint was trained on: band {} holds \
             {}..{} (mean {}, sd {}) where the training statistics expect about {}..{} (mean {} \
             ± 3 sd of {}); its mean lies {} sd from the training mean and its values spread \
             {}x as wide. Likely cause: {}.",
            self.file.display(),
            self.modality,
            b + 1,
            number(band.min),
            number(band.max),
            number(observed_mean),
            number(d.spread * std),
            number(mean - 3.0 * std),
            number(mean + 3.0 * std),
            number(mean),
            number(std),
            number(d.offset.abs()),
            number(d.spread),
            d.cause()
        )
    }
}

/// A scene's inputs measured as their strips are read (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct RangeSurvey {
    inputs: Vec<InputSurvey>,
    /// Inputs beyond the refusal bound are classified anyway, with a warning.
    accept: bool,
}

impl RangeSurvey {
    /// A survey of `inputs` (model index, modality name, file), in the order their pixels are
    /// added, against `norm`'s statistics; `accept` turns refusals into warnings.
    ///
    /// # Panics
    /// If a model index is out of `norm`'s range: callers checked the inputs against the model
    /// whose statistics `norm` holds ([`Normaliser::new`]).
    pub(crate) fn new(
        norm: &Normaliser,
        inputs: &[(usize, String, PathBuf)],
        accept: bool,
    ) -> Self {
        let inputs = inputs
            .iter()
            .map(|(m, modality, file)| InputSurvey {
                modality: modality.clone(),
                file: file.clone(),
                mean: norm.mean[*m].iter().map(|&v| f64::from(v)).collect(),
                std: norm.std[*m].iter().map(|&v| f64::from(v)).collect(),
                bands: vec![BandSurvey::default(); norm.mean[*m].len()],
            })
            .collect();
        Self { inputs, accept }
    }

    /// Measures the valid values of input `slot`'s pixels `px` (its bands in order), leaving
    /// out its first `skip_rows` rows (measured with the strip before).
    pub(crate) fn add(&mut self, slot: usize, px: &Pixels, skip_rows: usize) {
        let input = &mut self.inputs[slot];
        let start = (skip_rows * px.width).min(px.valid.len());
        let valid = &px.valid[start..];
        for (b, band) in input.bands.iter_mut().enumerate().take(px.bands) {
            let values = &px.band(b)[start..];
            let (mean, std) = (input.mean[b], input.std[b]);
            let (mut min, mut max) = (band.min, band.max);
            let z = Moments::of(
                values
                    .iter()
                    .zip(valid)
                    .filter(|(_, &ok)| ok)
                    .map(|(&v, _)| {
                        let v = f64::from(v);
                        min = min.min(v);
                        max = max.max(v);
                        (v - mean) / std
                    }),
            );
            *band = BandSurvey {
                z: band.z.merge(z),
                min,
                max,
            };
        }
    }

    /// Refuses the scene when an input lies beyond the refusal bound (unless accepted), judged
    /// once it has [`EARLY_PIXELS`] valid pixels or, with `complete`, on whatever it has.
    ///
    /// # Errors
    /// The refusal, naming the file, modality, band, observed and expected ranges, the likely
    /// cause and the option that proceeds anyway.
    pub(crate) fn check(&self, complete: bool) -> Result<()> {
        if self.accept {
            return Ok(());
        }
        for input in &self.inputs {
            let counted = input.bands.iter().map(|b| b.z.count).min().unwrap_or(0);
            if !complete && counted < EARLY_PIXELS {
                continue;
            }
            if let Some((b, d)) = input.worst() {
                if d.verdict() == Verdict::Refuse {
                    bail!(
                        "{} Refused: values spread over {}x as wide or a mean over {} sd off \
                         are another bit depth, unit, scale or reference, not another scene \
                         (docs/data.md, \"Inputs unlike the training data\"). Fix the file, \
                         or pass --accept-input-range to classify it anyway.",
                        input.describe(b, &d),
                        number(REFUSE_SPREAD),
                        number(REFUSE_OFFSET_SD)
                    );
                }
            }
        }
        Ok(())
    }

    /// The warnings of the scene measured so far: one per input beyond a warning bound (or
    /// beyond the refusal bound, when accepted).
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for input in &self.inputs {
            let Some((b, d)) = input.worst() else {
                continue;
            };
            match d.verdict() {
                Verdict::Fits => {}
                Verdict::Warn => out.push(input.describe(b, &d)),
                Verdict::Refuse => out.push(format!(
                    "{} Classified anyway (--accept-input-range).",
                    input.describe(b, &d)
                )),
            }
        }
        out
    }
}

/// `v` with about four significant digits, in plain or scientific notation.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    let digits = if a == 0.0 {
        0
    } else {
        (3 - a.log10().floor() as i64).clamp(0, 6) as usize
    };
    let text = format!("{v:.digits$}");
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn departure(offset: f64, spread: f64) -> Verdict {
        Departure { offset, spread }.verdict()
    }

    #[test]
    fn bounds_separate_units_and_bit_depth_from_other_scenes() {
        // A scene of the training distribution, a cloudy or flat one.
        assert_eq!(departure(0.2, 0.7), Verdict::Fits);
        assert_eq!(departure(-1.8, 0.13), Verdict::Fits);
        assert_eq!(departure(-0.45, 0.02), Verdict::Fits, "flat ground");
        // Unlike the training data: warned.
        assert_eq!(departure(4.4, 0.5), Verdict::Warn);
        assert_eq!(
            departure(34.8, 5.9),
            Verdict::Warn,
            "cloudy for one clear patch"
        );
        assert_eq!(departure(2.4, 0.016), Verdict::Warn, "SAR linear for dB");
        assert_eq!(departure(-0.45, 5.0), Verdict::Warn);
        // Another bit depth, unit or reference: refused.
        assert_eq!(departure(650.0, 257.0), Verdict::Refuse, "x257");
        assert_eq!(departure(30.0, 16.0), Verdict::Refuse, "12 bits for 8");
        assert_eq!(departure(45.0, 100.0), Verdict::Refuse, "cm for m");
        assert_eq!(departure(155.0, 7.3), Verdict::Refuse, "elevation for nDSM");
    }

    /// `values` as a one-band strip of `width` columns, all valid but the NaNs.
    fn strip(values: &[f32], width: usize) -> Pixels {
        Pixels {
            bands: 1,
            width,
            height: values.len() / width,
            data: values
                .iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect(),
            valid: values.iter().map(|v| !v.is_nan()).collect(),
        }
    }

    fn survey(mean: f32, std: f32, accept: bool) -> RangeSurvey {
        let norm = Normaliser {
            mean: vec![vec![mean]],
            std: vec![vec![std]],
        };
        RangeSurvey::new(&norm, &[(0, "dsm".into(), "d.tif".into())], accept)
    }

    #[test]
    fn skipped_rows_and_invalid_pixels_are_not_measured() {
        let mut s = survey(10.0, 2.0, false);
        // Row 0 is skipped (measured before); the NaN is invalid.
        s.add(0, &strip(&[99.0, 99.0, 8.0, f32::NAN, 12.0, 10.0], 2), 1);
        let z = s.inputs[0].bands[0].z;
        assert_eq!(z.count, 3);
        assert!((z.mean - 0.0).abs() < 1e-12);
        assert_eq!(
            (s.inputs[0].bands[0].min, s.inputs[0].bands[0].max),
            (8.0, 12.0)
        );
    }

    #[test]
    fn a_refusal_names_file_modality_ranges_cause_and_option_and_waits_for_pixels() {
        let mut s = survey(2.0, 4.5, false);
        // Centimetres for metres: 2 m mean, 4.5 m sd stored x100.
        let cm: Vec<f32> = (0..64)
            .map(|i| 200.0 + 450.0 * ((i % 8) as f32 - 3.5) / 2.3)
            .collect();
        s.add(0, &strip(&cm, 8), 0);
        s.check(false).unwrap();
        let err = s.check(true).unwrap_err().to_string();
        for part in [
            "d.tif (modality dsm)",
            "band 1 holds",
            "expect about -11.5..15.5",
            "centimetres for metres",
            "--accept-input-range",
        ] {
            assert!(err.contains(part), "{part:?} in {err}");
        }
        assert!(s.warnings()[0].contains("d.tif"));
        let mut accepted = survey(2.0, 4.5, true);
        accepted.add(0, &strip(&cm, 8), 0);
        accepted.check(true).unwrap();
        assert!(accepted.warnings()[0].ends_with("Classified anyway (--accept-input-range)."));
    }

    #[test]
    fn numbers_keep_four_digits() {
        assert_eq!(number(80.2667), "80.27");
        assert_eq!(number(-36.05), "-36.05");
        assert_eq!(number(65535.0), "65535");
        assert_eq!(number(0.0123456), "0.01235");
        assert_eq!(number(2.5e7), "2.500e7");
        assert_eq!(number(0.0), "0");
    }
}
