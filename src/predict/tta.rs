//! Test-time augmentation (`--tta`): each batch of windows is classified in several views of the
//! dihedral group of the square (rotations by quarter turns, mirror images), each view's
//! probabilities are mapped back onto the window and the views are averaged, per window and per
//! route, before the windows are blended.
//!
//! The average is the mean of the softmax probabilities, not of the logits: the branches return
//! probabilities, and a mean of probabilities is again a distribution over the classes, which
//! the blend and `--probs` take as they are. Its spread across the views
//! (`--tta-spread`) is the population standard deviation (the views are the whole set, not a
//! sample of it) of the probability of the class the window's mean predicts, a second measure of
//! uncertainty beside the probabilities themselves: a class the model keeps whichever way the
//! window is turned scores near 0, one that depends on the orientation scores high.
//!
//! Each set of views is a group, so the averaged prediction is itself symmetric: the `flips`
//! prediction of a mirrored window is the mirrored prediction of the window (up to rounding).
//! That is why `flips` holds the two mirrors and their composition, the half turn (4 views),
//! not the two mirrors alone (3 views, not closed: their average favours one orientation).

use anyhow::{bail, Result};
use std::fmt;
use std::path::Path;
use tch::{Kind, Tensor};

/// Which views of each window are classified and averaged (`--tta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tta {
    /// The window as it is (one view): what dis2 did before `--tta`, to the bit.
    #[default]
    None,
    /// The window, its left-right and top-bottom mirror images and its half turn (4 views).
    Flips,
    /// The 8 symmetries of the square: 4 quarter turns, each with and without a mirror image
    /// (needs square windows).
    D8,
}

impl Tta {
    /// The views of the set, the identity first.
    pub(crate) fn views(self) -> Vec<View> {
        let view = |quarter_turns, mirror| View {
            quarter_turns,
            mirror,
        };
        match self {
            Tta::None => vec![view(0, false)],
            // Top-bottom mirror = half turn of the left-right mirror.
            Tta::Flips => vec![view(0, false), view(0, true), view(2, true), view(2, false)],
            Tta::D8 => (0..4)
                .flat_map(|q| [view(q, false), view(q, true)])
                .collect(),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flips => "flips",
            Tta::D8 => "d8",
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One element of the dihedral group of the square acting on the last two axes (rows, columns)
/// of a `[B, C, H, W]` tensor: a left-right mirror image when `mirror`, then `quarter_turns`
/// counter-clockwise quarter turns (`torch.rot90` over `(H, W)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    pub quarter_turns: u8,
    pub mirror: bool,
}

impl View {
    /// The view of `x` (`[B, C, H, W]`; odd quarter turns need `H == W` to keep the shape).
    pub(crate) fn apply(self, x: &Tensor) -> Tensor {
        let mirrored = if self.mirror {
            x.flip([3])
        } else {
            x.shallow_clone()
        };
        match self.quarter_turns % 4 {
            0 => mirrored,
            q => mirrored.rot90(i64::from(q), [2, 3]),
        }
    }

    /// The inverse of [`Self::apply`]: `invert(apply(x)) == x` exactly (both permute pixels).
    pub(crate) fn invert(self, y: &Tensor) -> Tensor {
        let turned = match self.quarter_turns % 4 {
            0 => y.shallow_clone(),
            q => y.rot90(-i64::from(q), [2, 3]),
        };
        if self.mirror {
            turned.flip([3])
        } else {
            turned
        }
    }
}

/// How one run uses TTA: the views, and whether the spread across them is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtaRun {
    pub tta: Tta,
    pub spread: bool,
}

impl TtaRun {
    /// Checks the choice against the model's windows (`crop`, rows x columns) and the spread
    /// output asked for (`spread`, `--tta-spread`).
    ///
    /// # Errors
    /// `--tta d8` with windows that are not square (a quarter turn would change their shape);
    /// `--tta-spread` with `--tta none` (one view has no spread).
    pub(crate) fn new(tta: Tta, crop: (usize, usize), spread: Option<&Path>) -> Result<Self> {
        if tta == Tta::D8 && crop.0 != crop.1 {
            bail!(
                "--tta d8: the model's windows are {} x {} pixels (model.crop); the quarter turns \
                 of d8 need square windows; use --tta flips",
                crop.0,
                crop.1
            );
        }
        if let (Tta::None, Some(path)) = (tta, spread) {
            bail!(
                "--tta-spread {}: with --tta none each window is classified once and has no \
                 spread; give --tta flips or --tta d8",
                path.display()
            );
        }
        Ok(Self {
            tta,
            spread: spread.is_some(),
        })
    }

    /// Values per pixel of [`Self::probs`]: `k` probabilities, and the spread when asked for.
    pub(crate) fn channels(self, k: usize) -> usize {
        k + usize::from(self.spread)
    }

    /// The probabilities of the windows of `inputs` (one `[B, C_i, H, W]` tensor per modality,
    /// `None` where not given) as `forward` returns them (`[B, K, H, W]` softmax probabilities),
    /// averaged over the views: `[B, K, H, W]` float32, with the spread as channel `K` when asked
    /// for (`[B, K + 1, H, W]`). All views of the batch run in one call of `forward` on
    /// `views x B` windows. With [`Tta::None`], `forward`'s output as it is.
    ///
    /// # Errors
    /// Those of `forward`.
    pub(crate) fn probs(
        self,
        inputs: &[Option<Tensor>],
        forward: impl FnOnce(&[Option<&Tensor>]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let views = self.tta.views();
        if views.len() == 1 {
            let refs: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
            return forward(&refs);
        }
        let stacked: Vec<Option<Tensor>> = (inputs.iter())
            .map(|t| {
                t.as_ref().map(|t| {
                    let each: Vec<Tensor> = views.iter().map(|v| v.apply(t)).collect();
                    Tensor::cat(&each, 0)
                })
            })
            .collect();
        let refs: Vec<Option<&Tensor>> = stacked.iter().map(Option::as_ref).collect();
        let out = forward(&refs)?.to_kind(Kind::Float);
        let back: Vec<Tensor> = (out.chunk(views.len() as i64, 0).iter())
            .zip(&views)
            .map(|(y, v)| v.invert(y))
            .collect();
        Ok(average(&Tensor::stack(&back, 0), self.spread))
    }
}

/// The mean over the views of `per_view` (`[V, B, K, H, W]`), with the population standard
/// deviation over the views of the mean's predicted class as channel `K` when `spread`.
fn average(per_view: &Tensor, spread: bool) -> Tensor {
    let mean = per_view.mean_dim(0, false, Kind::Float);
    if !spread {
        return mean;
    }
    let best = mean.argmax(1, true).unsqueeze(0);
    let size = per_view.size();
    let best = best.expand([size[0], size[1], 1, size[3], size[4]], false);
    let sd = per_view.gather(2, &best, false).std_dim(0, false, false);
    Tensor::cat(&[mean, sd], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn ramp(shape: [i64; 4]) -> Tensor {
        let n: i64 = shape.iter().product();
        Tensor::arange(n, (Kind::Float, Device::Cpu)).view(shape)
    }

    #[test]
    fn every_view_and_its_inverse_round_trip_exactly() {
        let x = ramp([2, 3, 5, 5]);
        let views = Tta::D8.views();
        for v in &views {
            assert!(v.invert(&v.apply(&x)).equal(&x), "{v:?}");
            assert!(v.apply(&v.invert(&x)).equal(&x), "{v:?}");
        }
        // The 8 views are distinct, so d8 holds the whole group.
        for (i, a) in views.iter().enumerate() {
            for b in &views[i + 1..] {
                assert!(!a.apply(&x).equal(&b.apply(&x)), "{a:?} {b:?}");
            }
        }
        // Non-square windows round-trip under the mirrors and the half turn (flips).
        let wide = ramp([1, 2, 3, 7]);
        for v in Tta::Flips.views() {
            assert!(v.invert(&v.apply(&wide)).equal(&wide), "{v:?}");
        }
    }

    #[test]
    fn views_are_the_named_symmetries() {
        let x = ramp([1, 1, 3, 3]);
        let at = |t: &Tensor, r: i64, c: i64| t.int64_value(&[0, 0, r, c]);
        let flips = Tta::Flips.views();
        // Left-right mirror: column c comes from column 2 - c.
        assert_eq!(at(&flips[1].apply(&x), 0, 0), at(&x, 0, 2));
        // Top-bottom mirror: row r comes from row 2 - r.
        assert_eq!(at(&flips[2].apply(&x), 0, 0), at(&x, 2, 0));
        assert_eq!(at(&flips[2].apply(&x), 0, 1), at(&x, 2, 1));
        // Half turn.
        assert_eq!(at(&flips[3].apply(&x), 0, 0), at(&x, 2, 2));
        assert_eq!(Tta::None.views().len(), 1);
        assert_eq!(Tta::D8.views().len(), 8);
    }

    /// A stand-in for a branch that is not symmetric: softmax over 3 classes of the input plus
    /// a ramp across the columns, steeper for each class.
    fn lopsided(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        let x = inputs[0].unwrap();
        let w = x.size()[3];
        let columns = Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, 1, 1, w]);
        let classes = Tensor::arange(3, (Kind::Float, Device::Cpu)).view([1, 3, 1, 1]);
        Ok((x + columns * classes * 0.3).softmax(1, Kind::Float))
    }

    #[test]
    fn none_is_the_forward_itself_to_the_bit() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let run = TtaRun::new(Tta::None, (8, 8), None).unwrap();
        let got = run.probs(&[Some(x.shallow_clone())], lopsided).unwrap();
        assert!(got.equal(&lopsided(&[Some(&x)]).unwrap()));
    }

    #[test]
    fn the_average_is_symmetric_and_a_distribution() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        for tta in [Tta::Flips, Tta::D8] {
            let run = TtaRun::new(tta, (8, 8), Some(Path::new("s.tif"))).unwrap();
            let p = run.probs(&[Some(x.shallow_clone())], lopsided).unwrap();
            assert_eq!(p.size(), [2, 4, 8, 8]);
            let probs = p.narrow(1, 0, 3);
            let sums = probs.sum_dim_intlist(1, false, Kind::Float);
            assert!(sums.allclose(&Tensor::ones_like(&sums), 1e-5, 1e-6, false));
            // TTA of a mirrored window = the mirrored TTA of the window, where the model alone
            // is not symmetric.
            let mirror = View {
                quarter_turns: 0,
                mirror: true,
            };
            let of_mirror = run.probs(&[Some(mirror.apply(&x))], lopsided).unwrap();
            assert!(
                of_mirror.allclose(&mirror.apply(&p), 1e-5, 1e-6, false),
                "{tta}"
            );
            let plain = lopsided(&[Some(&mirror.apply(&x))]).unwrap();
            let mirrored = mirror.apply(&lopsided(&[Some(&x)]).unwrap());
            assert!(!plain.allclose(&mirrored, 1e-3, 1e-3, false));
            // The spread: the views' sd of the predicted class's probability.
            let sd = p.narrow(1, 3, 1);
            assert!(sd.min().double_value(&[]) >= 0.0);
            assert!(
                sd.max().double_value(&[]) > 1e-3,
                "the ramp moves with the views"
            );
        }
    }

    #[test]
    fn spread_is_the_population_sd_of_the_predicted_class() {
        // Two views, two classes, one pixel: class 0 at 0.9 and 0.5; mean 0.7, sd 0.2.
        let per_view = Tensor::from_slice(&[0.9f32, 0.1, 0.5, 0.5]).view([2, 1, 2, 1, 1]);
        let out = average(&per_view, true);
        let v: Vec<f32> = Vec::try_from(out.view([-1])).unwrap();
        assert!(
            (v[0] - 0.7).abs() < 1e-6 && (v[1] - 0.3).abs() < 1e-6,
            "{v:?}"
        );
        assert!((v[2] - 0.2).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn refusals_name_the_flags() {
        let err = TtaRun::new(Tta::D8, (64, 32), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tta d8") && err.contains("64 x 32"), "{err}");
        assert!(TtaRun::new(Tta::Flips, (64, 32), None).is_ok());
        let err = TtaRun::new(Tta::None, (64, 64), Some(Path::new("s.tif")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tta-spread s.tif") && err.contains("--tta none"),
            "{err}"
        );
    }
}
