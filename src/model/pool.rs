//! Attention pooling of a feature map to one token (the reference's `AttnPoolToToken` and
//! `HierarchicalAttnPool`). Used by HF to summarise level 3 for the level-4 transformer, and by
//! DLKD to compare teacher and student features (distillation) and compensation and available
//! features (orthogonality) at levels 1..3.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::layers::{freeze_linear, linear, to_tokens};
use crate::precision::fp32;

/// Hidden width of the scoring MLP.
const HIDDEN: i64 = 128;

/// Scores every pixel with a two-layer MLP, softmaxes the scores over the pixels and returns the
/// weighted mean feature `[B, C]`, optionally projected to another width.
/// Variables: `mlp.0.*`, `mlp.2.*`, and `proj.*` when projected.
#[derive(Debug)]
pub(crate) struct AttnPool {
    fc1: nn::Linear,
    fc2: nn::Linear,
    proj: Option<nn::Linear>,
}

impl AttnPool {
    pub fn new(p: &nn::Path, channels: i64, out: Option<i64>) -> Self {
        AttnPool {
            fc1: linear(&(p / "mlp" / "0"), channels, HIDDEN),
            fc2: linear(&(p / "mlp" / "2"), HIDDEN, 1),
            proj: out.map(|o| linear(&(p / "proj"), channels, o)),
        }
    }

    /// `x`: `[B, C, H, W]` to `[B, C]` (or `[B, out]`). In a bf16 forward the hidden layer of the
    /// scoring MLP runs in bfloat16; the scores, their softmax and the weighted mean are float32.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // Tokens [B, N, C] and the hidden scores [B, N, HIDDEN].
        let flat = to_tokens(x);
        let hidden = flat.apply(&self.fc1).relu();
        let pooled = fp32(x.device(), || {
            // The one-output layer as a matrix-vector product: the same numbers as `fc2`, but its
            // backward is an outer product rather than a slow rank-1 matrix multiplication.
            let fc2 = self.fc2.ws.reshape([HIDDEN]).to_kind(Kind::Float);
            let scores = hidden.to_kind(Kind::Float).matmul(&fc2); // [B, N]
            let scores = match &self.fc2.bs {
                Some(bias) => scores + bias,
                None => scores,
            };
            let weights = scores.softmax(1, Kind::Float).unsqueeze(1); // [B, 1, N]
            weights.bmm(&flat.to_kind(Kind::Float)).squeeze_dim(1) // [B, C]
        });
        match &self.proj {
            Some(proj) => proj.forward(&pooled),
            None => pooled,
        }
    }

    /// The scoring MLP's hidden layer and the projection stored as `kind`, its scoring layer
    /// float32; everything detached.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        freeze_linear(&mut self.fc1, kind);
        freeze_linear(&mut self.fc2, Kind::Float);
        if let Some(proj) = &mut self.proj {
            freeze_linear(proj, kind);
        }
    }
}

/// One attention pool per level 1..3 (widths w, 2w, 4w). Variables: `attn_pools.{0,1,2}.*`.
#[derive(Debug)]
pub(crate) struct LevelPools {
    pools: Vec<AttnPool>,
}

impl LevelPools {
    pub fn new(p: &nn::Path, width: i64) -> Self {
        let p = p / "attn_pools";
        let pools = (0..3)
            .map(|i| AttnPool::new(&(&p / i), width << i, None))
            .collect();
        LevelPools { pools }
    }

    /// Pools levels 1..3 of `feats` (a fourth level, if given, is not read).
    pub fn forward(&self, feats: &[Tensor]) -> Vec<Tensor> {
        self.pools
            .iter()
            .zip(feats)
            .map(|(pool, f)| pool.forward(f))
            .collect()
    }

    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        self.pools
            .iter_mut()
            .for_each(|p| p.prepare_inference(kind));
    }
}
