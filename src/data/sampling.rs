//! Samplers choose windows and augmentations; the functions here resample and augment what was
//! read. A sample is fully described by a [`SampleSpec`], drawn from an RNG derived from
//! `(seed, epoch, index)`, so batches do not depend on the number of threads.

use super::config::DataConfig;
use super::dataset::SceneDataset;
use super::raster::{Pixels, Window};
use super::rng::Rng;
use crate::model::config::ModelConfig;

/// Flips and rotation applied after resampling: flips first, then `rot90` quarter turns
/// counter-clockwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Augment {
    pub flip_x: bool,
    pub flip_y: bool,
    pub rot90: u8,
}

/// Everything needed to produce one sample: the scene, the source window (native pixels), the
/// output size and the augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleSpec {
    pub scene: usize,
    pub window: Window,
    pub out_width: usize,
    pub out_height: usize,
    pub augment: Augment,
}

impl SampleSpec {
    /// The size the window is resampled to before the rotation: (width, height).
    pub(crate) fn pre_rotation_size(&self) -> (usize, usize) {
        if self.augment.rot90 % 2 == 1 {
            (self.out_height, self.out_width)
        } else {
            (self.out_width, self.out_height)
        }
    }
}

/// Random crops with random scale, flips and rotations, scenes chosen in proportion to area.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RandomCropSampler {
    /// Output crop as [height, width].
    pub crop: [usize; 2],
    pub scale: [f64; 2],
    pub flips: bool,
    pub rotations: bool,
    pub samples_per_epoch: usize,
    pub seed: u64,
}

impl RandomCropSampler {
    /// The sampler of an experiment: crop from the model, the rest from `data.sampling`.
    pub(crate) fn from_config(data: &DataConfig, model: &ModelConfig, seed: u64) -> Self {
        let s = &data.sampling;
        Self {
            crop: [model.crop[0].max(1) as usize, model.crop[1].max(1) as usize],
            scale: s.scale,
            flips: s.flips,
            rotations: s.rotations,
            samples_per_epoch: s.samples_per_epoch,
            seed,
        }
    }

    /// The samples of `epoch`, in order.
    pub fn epoch(&self, dataset: &SceneDataset, epoch: u64) -> Vec<SampleSpec> {
        let sizes: Vec<(usize, usize)> = dataset
            .scenes
            .iter()
            .map(|s| (s.width(), s.height()))
            .collect();
        let mut cumulative = Vec::with_capacity(sizes.len());
        let mut total = 0.0;
        for (w, h) in &sizes {
            total += (*w * *h) as f64;
            cumulative.push(total);
        }
        (0..self.samples_per_epoch)
            .map(|i| self.sample(&sizes, &cumulative, epoch, i as u64))
            .collect()
    }

    /// Sample `index` of `epoch`, from its own RNG.
    fn sample(
        &self,
        sizes: &[(usize, usize)],
        cumulative: &[f64],
        epoch: u64,
        index: u64,
    ) -> SampleSpec {
        let mut rng = Rng::derive(self.seed, epoch, index);
        let total = cumulative.last().copied().unwrap_or(0.0);
        let pick = rng.f64() * total;
        let scene = cumulative
            .partition_point(|&c| c <= pick)
            .min(sizes.len().saturating_sub(1));
        let (sw, sh) = sizes.get(scene).copied().unwrap_or((1, 1));
        let augment = Augment {
            flip_x: self.flips && rng.chance(0.5),
            flip_y: self.flips && rng.chance(0.5),
            rot90: if self.rotations {
                rng.below(4) as u8
            } else {
                0
            },
        };
        let [ch, cw] = self.crop;
        let mut spec = SampleSpec {
            scene,
            window: Window::new(0, 0, 1, 1),
            out_width: cw,
            out_height: ch,
            augment,
        };
        let (pw, ph) = spec.pre_rotation_size();
        let s = rng.range_f64(self.scale[0], self.scale[1]);
        let ww = ((pw as f64 * s).round() as usize).max(1);
        let wh = ((ph as f64 * s).round() as usize).max(1);
        spec.window = Window::new(offset(&mut rng, sw, ww), offset(&mut rng, sh, wh), ww, wh);
        spec
    }
}

/// A random offset of a `window`-long span in a `size`-long scene; when the window is longer,
/// the scene lies somewhere inside it (the rest reads as invalid).
fn offset(rng: &mut Rng, size: usize, window: usize) -> i64 {
    if window <= size {
        rng.range_i64(0, (size - window) as i64)
    } else {
        -rng.range_i64(0, (window - size) as i64)
    }
}

/// Sliding crop-sized windows over every scene for validation and testing: stride apart, the
/// last one flush with the edge; no scaling, no augmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlidingWindowSampler {
    /// Window as [height, width].
    pub crop: [usize; 2],
    /// Steps as [rows, columns].
    pub stride: [usize; 2],
}

impl SlidingWindowSampler {
    /// The windows of an experiment: crop from the model, stride from `data.sampling.val_stride`.
    pub(crate) fn from_config(data: &DataConfig, model: &ModelConfig) -> Self {
        let crop = [model.crop[0].max(1) as usize, model.crop[1].max(1) as usize];
        let stride = match data.sampling.val_stride {
            Some(s) => [s.max(1), s.max(1)],
            None => crop,
        };
        Self { crop, stride }
    }

    /// Every window of every scene, scene by scene, row by row.
    pub fn windows(&self, dataset: &SceneDataset) -> Vec<SampleSpec> {
        let [ch, cw] = self.crop;
        let mut out = Vec::new();
        for (scene, s) in dataset.scenes.iter().enumerate() {
            for y in starts(s.height(), ch, self.stride[0]) {
                for x in starts(s.width(), cw, self.stride[1]) {
                    out.push(SampleSpec {
                        scene,
                        window: Window::new(x, y, cw, ch),
                        out_width: cw,
                        out_height: ch,
                        augment: Augment::default(),
                    });
                }
            }
        }
        out
    }
}

/// Start offsets covering `size` with `window`-long steps of `stride`, the last flush with the end.
fn starts(size: usize, window: usize, stride: usize) -> Vec<i64> {
    if size <= window {
        return vec![0];
    }
    let last = size - window;
    let mut v: Vec<i64> = (0..=last)
        .step_by(stride.max(1))
        .map(|x| x as i64)
        .collect();
    if v.last() != Some(&(last as i64)) {
        v.push(last as i64);
    }
    v
}

/// Resamples pixels to `width` x `height`: bilinear over valid neighbours for values, nearest
/// for the mask (an output pixel is valid when its nearest source pixel is).
pub(crate) fn resize_pixels(px: &Pixels, width: usize, height: usize) -> Pixels {
    if (px.width, px.height) == (width, height) {
        return px.clone();
    }
    let mut out = Pixels::invalid(px.bands, width, height);
    let (sx, sy) = (
        px.width as f64 / width as f64,
        px.height as f64 / height as f64,
    );
    let plane_in = px.width * px.height;
    let plane_out = width * height;
    for r in 0..height {
        let fy = ((r as f64 + 0.5) * sy - 0.5).clamp(0.0, (px.height - 1) as f64);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(px.height - 1);
        let ty = fy - y0 as f64;
        let ny = (((r as f64 + 0.5) * sy) as usize).min(px.height - 1);
        for c in 0..width {
            let fx = ((c as f64 + 0.5) * sx - 0.5).clamp(0.0, (px.width - 1) as f64);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(px.width - 1);
            let tx = fx - x0 as f64;
            let nx = (((c as f64 + 0.5) * sx) as usize).min(px.width - 1);
            let o = r * width + c;
            if !px.valid[ny * px.width + nx] {
                continue;
            }
            out.valid[o] = true;
            let taps = [
                (y0 * px.width + x0, (1.0 - tx) * (1.0 - ty)),
                (y0 * px.width + x1, tx * (1.0 - ty)),
                (y1 * px.width + x0, (1.0 - tx) * ty),
                (y1 * px.width + x1, tx * ty),
            ];
            let wsum: f64 = taps
                .iter()
                .filter(|(i, _)| px.valid[*i])
                .map(|(_, w)| w)
                .sum();
            for b in 0..px.bands {
                let v: f64 = taps
                    .iter()
                    .filter(|(i, _)| px.valid[*i])
                    .map(|(i, w)| w * f64::from(px.data[b * plane_in + i]))
                    .sum();
                out.data[b * plane_out + o] = if wsum > 0.0 { (v / wsum) as f32 } else { 0.0 };
            }
        }
    }
    out
}

/// Nearest-neighbour resampling of one plane (labels).
pub(crate) fn resize_nearest<T: Copy>(
    src: &[T],
    sw: usize,
    sh: usize,
    width: usize,
    height: usize,
) -> Vec<T> {
    if (sw, sh) == (width, height) {
        return src.to_vec();
    }
    let (sx, sy) = (sw as f64 / width as f64, sh as f64 / height as f64);
    let mut out = Vec::with_capacity(width * height);
    for r in 0..height {
        let y = (((r as f64 + 0.5) * sy) as usize).min(sh - 1);
        for c in 0..width {
            let x = (((c as f64 + 0.5) * sx) as usize).min(sw - 1);
            out.push(src[y * sw + x]);
        }
    }
    out
}

/// Applies flips then `rot90` counter-clockwise quarter turns to a `w` x `h` plane; returns the
/// new plane (its size is `h` x `w` for odd turns).
pub(crate) fn augment_plane<T: Copy>(src: &[T], w: usize, h: usize, aug: Augment) -> Vec<T> {
    let k = aug.rot90 % 4;
    let (ow, oh) = if k % 2 == 1 { (h, w) } else { (w, h) };
    let mut out = Vec::with_capacity(ow * oh);
    for r in 0..oh {
        for c in 0..ow {
            // Position in the flipped (pre-rotation) image, as numpy.rot90 does it.
            let (y, x) = match k {
                0 => (r, c),
                1 => (c, w - 1 - r),
                2 => (h - 1 - r, w - 1 - c),
                _ => (h - 1 - c, r),
            };
            let y = if aug.flip_y { h - 1 - y } else { y };
            let x = if aug.flip_x { w - 1 - x } else { x };
            out.push(src[y * w + x]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_flips_move_pixels_like_numpy() {
        // 3 wide, 2 high: [[1, 2, 3], [4, 5, 6]]
        let src = [1, 2, 3, 4, 5, 6];
        let rot = |k| {
            augment_plane(
                &src,
                3,
                2,
                Augment {
                    rot90: k,
                    ..Default::default()
                },
            )
        };
        assert_eq!(rot(1), vec![3, 6, 2, 5, 1, 4]); // np.rot90: [[3,6],[2,5],[1,4]]
        assert_eq!(rot(2), vec![6, 5, 4, 3, 2, 1]);
        assert_eq!(rot(3), vec![4, 1, 5, 2, 6, 3]);
        let fx = augment_plane(
            &src,
            3,
            2,
            Augment {
                flip_x: true,
                ..Default::default()
            },
        );
        assert_eq!(fx, vec![3, 2, 1, 6, 5, 4]);
        let fy = augment_plane(
            &src,
            3,
            2,
            Augment {
                flip_y: true,
                ..Default::default()
            },
        );
        assert_eq!(fy, vec![4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn resampling_keeps_values_and_respects_the_mask() {
        let px = Pixels {
            bands: 1,
            width: 2,
            height: 2,
            data: vec![10.0, 20.0, 30.0, 0.0],
            valid: vec![true, true, true, false],
        };
        let up = resize_pixels(&px, 4, 4);
        assert_eq!(up.valid.iter().filter(|&&v| !v).count(), 4);
        assert!(up
            .data
            .iter()
            .zip(&up.valid)
            .all(|(&v, &ok)| !ok || (10.0..=30.0).contains(&v)));
        assert_eq!(up.data[0], 10.0);
        assert_eq!(
            resize_nearest(&[1, 2, 3, 4], 2, 2, 4, 2),
            vec![1, 1, 2, 2, 3, 3, 4, 4]
        );
    }

    #[test]
    fn sliding_windows_cover_edges_and_small_scenes() {
        assert_eq!(starts(100, 64, 64), vec![0, 36]);
        assert_eq!(starts(128, 64, 64), vec![0, 64]);
        assert_eq!(starts(50, 64, 32), vec![0]);
        assert_eq!(starts(100, 64, 16), vec![0, 16, 32, 36]);
    }
}
