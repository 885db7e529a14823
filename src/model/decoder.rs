//! Class-wise feature learning module, CFLM, part 2: the class-wise decoder with deep-supervision
//! heads (the reference's `ClassWiseDecoder`).
//!
//! Every class runs the same decoder path (shared weights) from its class-wise level-4 features
//! up through levels 3, 2, 1 with U-Net skips from the fused levels, each level emitting a
//! one-channel class map from a per-class 1x1 head (deep supervision at 1/16, 1/8, 1/4, 1/2).
//! The K per-class maps at full resolution are concatenated and combined by two convolutions into
//! the penultimate features, and a 1x1 convolution gives the logits.
//!
//! The reference runs the K class paths one after another; here they run as one batched
//! computation with the classes folded into the batch dimension (`[B·K, C, h, w]`), and the K
//! per-class heads of a level are one grouped 1x1 convolution. The numbers are the same.

use tch::nn;
use tch::{Kind, Tensor};

use super::encoder::Features;
use super::layers::{channels_last, freeze_conv, frozen, resize_aligned, up2, PreNormConv};

/// Per-class 1x1 heads of one level, variables `{k}.weight` `[1, C, 1, 1]` and `{k}.bias` `[1]`.
#[derive(Debug)]
struct ClassHeads {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
}

impl ClassHeads {
    fn new(p: &nn::Path, channels: i64, classes: i64) -> Self {
        let bound = 1.0 / (channels as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let (weights, biases) = (0..classes)
            .map(|k| {
                let q = p / k;
                (
                    q.var("weight", &[1, channels, 1, 1], init),
                    q.var("bias", &[1], init),
                )
            })
            .unzip();
        ClassHeads { weights, biases }
    }

    /// `x`: `[B·K, C, h, w]` (class-major inside each sample) to `[B, K, h, w]`: class k's map
    /// from class k's head.
    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let k = self.weights.len() as i64;
        let (b, c, h, w) = (s[0] / k, s[1], s[2], s[3]);
        let tokens = x.permute([0, 2, 3, 1]).reshape([b, k, h * w, c]);
        let weight = Tensor::cat(&self.weights, 0).reshape([k, c, 1]);
        let bias = Tensor::cat(&self.biases, 0).reshape([1, k, 1, 1]);
        tokens.matmul(&weight).reshape([b, k, h, w]) + bias
    }

    /// Weights detached and stored as `kind` (a matrix product), biases float32.
    fn prepare_inference(&mut self, kind: Kind) {
        self.weights = self.weights.iter().map(|w| frozen(w, kind)).collect();
        self.biases = self.biases.iter().map(|b| frozen(b, Kind::Float)).collect();
    }
}

/// What a decoder gives: the class-wise one or the plain one of the CFLM ablation
/// ([`super::plain_decoder::PlainDecoder`]).
#[derive(Debug)]
pub struct DecoderOutputs {
    /// Softmax probabilities `[B, K, H, W]`, float32 (also in a bf16 forward).
    pub pred: Tensor,
    /// Logits `[B, K, H, W]`.
    pub logits: Tensor,
    /// Penultimate features `[B, w, H, W]` (the output of `class_combine_conv`, or `out_conv` of
    /// the plain decoder).
    pub penultimate: Tensor,
    /// Deep-supervision predictions from 1/16, 1/8, 1/4, 1/2 resolution, upsampled to `[H, W]`
    /// (align_corners) and softmaxed, float32; empty unless asked for.
    pub scale_preds: Vec<Tensor>,
}

impl DecoderOutputs {
    /// The outputs from the penultimate map, the 1x1 logit convolution and the deep-supervision
    /// logits of the four scales (up-sampled here to `out_size` and softmaxed).
    pub(super) fn new(
        penultimate: Tensor,
        final_conv: &nn::Conv2D,
        scale_logits: Vec<Tensor>,
        out_size: [i64; 2],
    ) -> Self {
        let logits = penultimate.apply(final_conv);
        let pred = logits.softmax(1, Kind::Float);
        let scale_preds = scale_logits
            .iter()
            .map(|m| resize_aligned(&m.to_kind(Kind::Float), out_size).softmax(1, Kind::Float))
            .collect();
        DecoderOutputs {
            pred,
            logits,
            penultimate,
            scale_preds,
        }
    }
}

/// Variables: `seg_d{4,3,2,1}_layers.{k}.*`, `e4_conv_up`, `e3_conv`, `e3_conv_up`, `e2_conv`,
/// `e2_conv_up`, `e1_conv` (each `conv.*`), `class_combine_conv.{0,1}.conv.*`, `final_conv.*`.
#[derive(Debug)]
pub(crate) struct ClassWiseDecoder {
    heads: [ClassHeads; 4],
    path: UpPath,
    combine: [PreNormConv; 2],
    final_conv: nn::Conv2D,
    classes: i64,
    out_size: [i64; 2],
}

/// The U-Net path both decoders share: from level 4 up through levels 3, 2, 1 with skips from the
/// fused levels (pre-norm 3x3 convolutions, reflect padding, `up2`), then up to the crop.
/// Variables: `e4_conv_up`, `e3_conv`, `e3_conv_up`, `e2_conv`, `e2_conv_up`, `e1_conv`.
#[derive(Debug)]
pub(super) struct UpPath {
    e4_conv_up: PreNormConv,
    e3_conv: PreNormConv,
    e3_conv_up: PreNormConv,
    e2_conv: PreNormConv,
    e2_conv_up: PreNormConv,
    e1_conv: PreNormConv,
    out_size: [i64; 2],
}

/// The maps of the up path: decoded levels 3, 2, 1 and level 1, rearranged by the decoder,
/// brought to the crop size.
pub(super) struct UpMaps {
    pub d3: Tensor,
    pub d2: Tensor,
    pub d1: Tensor,
    pub full: Tensor,
}

impl UpPath {
    /// `w`: base width; `c1`: channels of the decoded level 1; `out_size`: the crop.
    pub(super) fn new(p: &nn::Path, w: i64, c1: i64, out_size: [i64; 2]) -> Self {
        UpPath {
            e4_conv_up: PreNormConv::k3(&(p / "e4_conv_up"), 8 * w, 4 * w, true),
            e3_conv: PreNormConv::k3(&(p / "e3_conv"), 8 * w, 4 * w, true),
            e3_conv_up: PreNormConv::k3(&(p / "e3_conv_up"), 4 * w, 2 * w, true),
            e2_conv: PreNormConv::k3(&(p / "e2_conv"), 4 * w, 2 * w, true),
            e2_conv_up: PreNormConv::k3(&(p / "e2_conv_up"), 2 * w, w, true),
            e1_conv: PreNormConv::k3(&(p / "e1_conv"), 2 * w, c1, true),
            out_size,
        }
    }

    /// `x4`: the level-4 input; `with_skip(conv, skip, x)` runs `conv` on a fused level joined
    /// with the path's map;
    /// `arrange` rearranges decoded level 1's channels before it is brought to the crop size
    /// (bilinear resizing treats each channel alone, so before is the same as after, on a
    /// quarter of the pixels).
    pub(super) fn forward(
        &self,
        x4: &Tensor,
        fused: &Features,
        with_skip: impl Fn(&PreNormConv, &Tensor, Tensor) -> Tensor,
        arrange: impl Fn(&Tensor) -> Tensor,
    ) -> UpMaps {
        let e4_up = self.e4_conv_up.forward(&up2(x4));
        let d3 = with_skip(&self.e3_conv, &fused[2], e4_up);
        let e3_up = self.e3_conv_up.forward(&up2(&d3));
        let d2 = with_skip(&self.e2_conv, &fused[1], e3_up);
        let e2_up = self.e2_conv_up.forward(&up2(&d2));
        let d1 = with_skip(&self.e1_conv, &fused[0], e2_up);
        // In float32 also in a bf16 forward: for few channels PyTorch's bilinear kernel is no
        // faster on bfloat16 (twice as slow at w/8 = 4 channels, as fast at K·w/8 = 24), and in
        // float32 the resized map is rounded to bfloat16 once, at the end.
        let mut full = up2(&arrange(&d1).to_kind(Kind::Float)).to_kind(d1.kind());
        let fs = full.size();
        if [fs[2], fs[3]] != self.out_size {
            full = full.upsample_bilinear2d(self.out_size, false, None, None);
        }
        UpMaps { d3, d2, d1, full }
    }

    pub(super) fn prepare_inference(&mut self, kind: Kind) {
        for conv in [
            &mut self.e4_conv_up,
            &mut self.e3_conv,
            &mut self.e3_conv_up,
            &mut self.e2_conv,
            &mut self.e2_conv_up,
            &mut self.e1_conv,
        ] {
            conv.prepare_inference(kind);
        }
    }
}

impl ClassWiseDecoder {
    /// `width`: base width w (levels w, 2w, 4w, 8w); `out_size`: the crop `[H, W]`.
    pub fn new(p: &nn::Path, width: i64, classes: i64, out_size: [i64; 2]) -> Self {
        let w = width;
        let c1 = w / 8;
        ClassWiseDecoder {
            heads: [
                ClassHeads::new(&(p / "seg_d4_layers"), 8 * w, classes),
                ClassHeads::new(&(p / "seg_d3_layers"), 4 * w, classes),
                ClassHeads::new(&(p / "seg_d2_layers"), 2 * w, classes),
                ClassHeads::new(&(p / "seg_d1_layers"), c1, classes),
            ],
            path: UpPath::new(p, w, c1, out_size),
            combine: [
                PreNormConv::k3(&(p / "class_combine_conv" / "0"), c1 * classes, 2 * w, true),
                PreNormConv::k3(&(p / "class_combine_conv" / "1"), 2 * w, w, true),
            ],
            final_conv: super::layers::conv2d(p / "final_conv", w, classes, 1, Default::default()),
            classes,
            out_size,
        }
    }

    /// `fused`: the fused levels (1..3 are read); `classwise`: `[B, K, 8w, h, w]` from
    /// [`super::cflm::ClassWiseAttention`]. `scales`: also compute the deep-supervision maps.
    pub fn forward(&self, fused: &Features, classwise: &Tensor, scales: bool) -> DecoderOutputs {
        let s = classwise.size();
        let (b, k) = (s[0], self.classes);
        let x4 = channels_last(&classwise.reshape([b * k, s[2], s[3], s[4]]));
        // A skip feature `[B, C_s, h, w]` repeated for every class and joined with the
        // class-path features `[B·K, C, h, w]`.
        let with_skip = |conv: &PreNormConv, e: &Tensor, x: Tensor| conv.forward_joined(e, &x, k);
        // [B·K, c1, h, w] to [B, K·c1, h, w] with the class blocks in order (the reference's
        // concatenation at full size), channels-last.
        let unify = |d1: &Tensor| {
            let s = d1.size();
            d1.permute([0, 2, 3, 1])
                .reshape([b, k, s[2], s[3], s[1]])
                .permute([0, 2, 3, 1, 4])
                .reshape([b, s[2], s[3], k * s[1]])
                .permute([0, 3, 1, 2])
        };
        let UpMaps {
            d3,
            d2,
            d1,
            full: unified,
        } = self.path.forward(&x4, fused, with_skip, unify);
        let penultimate = self.combine[1].forward(&self.combine[0].forward(&unified));
        let scale_maps = if scales {
            [(&x4, 0), (&d3, 1), (&d2, 2), (&d1, 3)]
                .into_iter()
                .map(|(x, i)| self.heads[i].forward(x))
                .collect()
        } else {
            Vec::new()
        };
        DecoderOutputs::new(penultimate, &self.final_conv, scale_maps, self.out_size)
    }

    /// Weights detached and stored as `kind`.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        self.heads
            .iter_mut()
            .for_each(|h| h.prepare_inference(kind));
        self.path.prepare_inference(kind);
        self.combine
            .iter_mut()
            .for_each(|c| c.prepare_inference(kind));
        freeze_conv(&mut self.final_conv, kind);
    }
}
