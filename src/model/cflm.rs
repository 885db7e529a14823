//! Class-wise feature learning module, CFLM, part 1: class-wise spatial attention (the
//! reference's `ClassWiseSpatialAttention`). Part 2, the class-wise decoder, is in `decoder.rs`.
//!
//! K learned class queries attend over the pixels of the unified level-4 map; each class gets
//! the level-4 features re-weighted by its own spatial attention.

use tch::nn;
use tch::{Kind, Tensor};

use super::layers::frozen;
use crate::precision::fp32;

/// Variables: `class_queries` `[K, C]`.
#[derive(Debug)]
pub(crate) struct ClassWiseAttention {
    queries: Tensor,
}

impl ClassWiseAttention {
    pub fn new(p: &nn::Path, channels: i64, classes: i64) -> Self {
        let bound = (6.0 / (classes + channels) as f64).sqrt();
        let queries = p.var(
            "class_queries",
            &[classes, channels],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        ClassWiseAttention { queries }
    }

    /// The class-wise spatial attention of CFLM: for `feat` `[B, C, h, w]`, the weights
    /// `softmax_pixels(q_k · f / sqrt(C))` as `[B, K, h, w]`; each class's map sums to 1 over
    /// the pixels.
    pub fn weights(&self, feat: &Tensor) -> Tensor {
        let s = feat.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let k = self.queries.size()[0];
        self.softmax_scores(&feat.reshape([b, c, h * w]))
            .view([b, k, h, w])
    }

    /// `[B, C, N]` features to `[B, K, N]` attention over the N pixels, float32 (also in a
    /// bf16 forward).
    fn softmax_scores(&self, flat: &Tensor) -> Tensor {
        let c = flat.size()[1];
        fp32(flat.device(), || {
            let queries = self.queries.to_kind(Kind::Float);
            let scores = queries.matmul(&flat.to_kind(Kind::Float)) / (c as f64).sqrt();
            scores.softmax(-1, Kind::Float)
        })
    }

    /// `feat`: `[B, C, h, w]` to the class-wise features `[B, K, C, h, w]`: for class k,
    /// `softmax_pixels(q_k · f / sqrt(C)) * f`. (The reference returns the same numbers laid out
    /// as `[B, K, h, w, C]`; this layout feeds the batched class-wise decoder without a copy.)
    pub fn forward(&self, feat: &Tensor) -> Tensor {
        let s = feat.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let flat = feat.reshape([b, c, h * w]); // [B, C, N]
        let attn = self.softmax_scores(&flat); // [B, K, N]
        let k = self.queries.size()[0];
        // In the features' precision: they feed the class-wise decoder's convolutions.
        let attn = attn.to_kind(flat.kind());
        (attn.unsqueeze(2) * flat.unsqueeze(1)).view([b, k, c, h, w])
    }

    /// The class queries detached (float32: the scores are float32).
    pub(crate) fn prepare_inference(&mut self) {
        self.queries = frozen(&self.queries, Kind::Float);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn attention_weights_sum_to_one_over_pixels_and_match_forward() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = ClassWiseAttention::new(&vs.root(), 8, 5);
        let feat = Tensor::randn([2, 8, 3, 4], (Kind::Float, Device::Cpu));
        let w = attn.weights(&feat);
        assert_eq!(w.size(), [2, 5, 3, 4]);
        let sums = w.sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
        let err = (sums - 1.0).abs().max().double_value(&[]);
        assert!(err < 1e-5, "per-class sums differ from 1 by {err}");
        assert!(w.min().double_value(&[]) >= 0.0);
        // forward is the features re-weighted by exactly these maps.
        let expected = w.unsqueeze(2) * feat.unsqueeze(1);
        let diff = (attn.forward(&feat) - expected)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }
}
