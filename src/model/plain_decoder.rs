//! The "no CFLM" ablation (`model.decoder: plain`): a plain U-Net decoder in place of the
//! class-wise feature learning module (class-wise attention and class-wise decoder).
//!
//! It is the class-wise decoder's path run once on ordinary channels instead of once per class:
//! from the unified level-4 map up through levels 3, 2, 1 with U-Net skips from the fused levels,
//! the same pre-norm 3x3 convolutions (reflect padding) and `up2`, a 1x1 deep-supervision head to
//! K classes at each of the four scales (1/16, 1/8, 1/4, 1/2, up-sampled to full size), two
//! convolutions to the penultimate map of w channels at full resolution, and 1x1 logits. Its
//! outputs are [`DecoderOutputs`] with the same meaning, so the losses and DLKD are unchanged.

use tch::nn;
use tch::{Kind, Tensor};

use super::decoder::{DecoderOutputs, UpMaps, UpPath};
use super::encoder::Features;
use super::layers::{freeze_conv, PreNormConv};

/// Variables: `e4_conv_up`, `e3_conv`, `e3_conv_up`, `e2_conv`, `e2_conv_up`, `e1_conv`,
/// `out_conv.{0,1}` (each `conv.*`), `seg_d{4,3,2,1}.*`, `final_conv.*`.
#[derive(Debug)]
pub(crate) struct PlainDecoder {
    heads: [nn::Conv2D; 4],
    path: UpPath,
    out_conv: [PreNormConv; 2],
    final_conv: nn::Conv2D,
    out_size: [i64; 2],
}

impl PlainDecoder {
    /// `width`: base width w (levels w, 2w, 4w, 8w); `out_size`: the crop `[H, W]`.
    pub fn new(p: &nn::Path, width: i64, classes: i64, out_size: [i64; 2]) -> Self {
        let w = width;
        let head =
            |name: &str, c: i64| super::layers::conv2d(p / name, c, classes, 1, Default::default());
        PlainDecoder {
            heads: [
                head("seg_d4", 8 * w),
                head("seg_d3", 4 * w),
                head("seg_d2", 2 * w),
                head("seg_d1", w),
            ],
            path: UpPath::new(p, w, w, out_size),
            out_conv: [
                PreNormConv::k3(&(p / "out_conv" / "0"), w, 2 * w, true),
                PreNormConv::k3(&(p / "out_conv" / "1"), 2 * w, w, true),
            ],
            final_conv: super::layers::conv2d(p / "final_conv", w, classes, 1, Default::default()),
            out_size,
        }
    }

    /// `fused`: the fused levels 1..4 of HF. `scales`: also compute the deep-supervision maps.
    pub fn forward(&self, fused: &Features, scales: bool) -> DecoderOutputs {
        let with_skip = |conv: &PreNormConv, e: &Tensor, x: Tensor| {
            conv.forward(&Tensor::cat(&[e.shallow_clone(), x], 1))
        };
        let x4 = &fused[3];
        let UpMaps { d3, d2, d1, full } =
            self.path
                .forward(x4, fused, with_skip, Tensor::shallow_clone);
        let penultimate = self.out_conv[1].forward(&self.out_conv[0].forward(&full));
        let scale_maps = if scales {
            [x4, &d3, &d2, &d1]
                .into_iter()
                .zip(&self.heads)
                .map(|(x, head)| x.apply(head))
                .collect()
        } else {
            Vec::new()
        };
        DecoderOutputs::new(penultimate, &self.final_conv, scale_maps, self.out_size)
    }

    /// Weights detached and stored as `kind`.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        self.heads.iter_mut().for_each(|h| freeze_conv(h, kind));
        self.path.prepare_inference(kind);
        self.out_conv
            .iter_mut()
            .for_each(|c| c.prepare_inference(kind));
        freeze_conv(&mut self.final_conv, kind);
    }
}
