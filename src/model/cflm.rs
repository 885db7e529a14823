//! Class-wise feature learning module, CFLM, part 1: class-wise spatial attention (the
//! reference's `ClassWiseSpatialAttention`). Part 2, the class-wise decoder, is in `decoder.rs`.
//!
//! K learned class queries attend over the pixels of the unified level-4 map; each class gets
//! the level-4 features re-weighted by its own spatial attention.

use tch::nn;
use tch::Tensor;

/// Variables: `class_queries` `[K, C]`.
#[derive(Debug)]
pub struct ClassWiseAttention {
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

    /// `feat`: `[B, C, h, w]` to the class-wise features `[B, K, C, h, w]`: for class k,
    /// `softmax_pixels(q_k · f / sqrt(C)) * f`. (The reference returns the same numbers laid out
    /// as `[B, K, h, w, C]`; this layout feeds the batched class-wise decoder without a copy.)
    pub fn forward(&self, feat: &Tensor) -> Tensor {
        let s = feat.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let flat = feat.reshape([b, c, h * w]); // [B, C, N]
        let scores = self.queries.matmul(&flat) / (c as f64).sqrt(); // [B, K, N]
        let attn = scores.softmax(-1, scores.kind());
        let k = self.queries.size()[0];
        (attn.unsqueeze(2) * flat.unsqueeze(1)).view([b, k, c, h, w])
    }
}
