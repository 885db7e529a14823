//! Hierarchical hybrid fusion, HF (the reference's `HiererchicalFusion`).
//!
//! Levels 1..3 are convolutional: the M slot features of a level are concatenated along channels
//! and fused by pre-norm convolutions; a residual path down-samples the fused level below
//! (`conv_res1`, `conv_res2`, 4x4 stride-2 convolutions with BatchNorm) and adds it.
//! Level 4 is a transformer over the token sequence
//! `[fusion token, slot-1 tokens + pos_1, ..., slot-M tokens + pos_M, pooled level-3 token]`;
//! the output tokens of each slot are folded back to maps, concatenated and unified by a 1x1
//! convolution, and the output fusion token is the global fused feature used by DLKD.
//!
//! The "no HF" ablation (`model.fusion: level4`) keeps only the level-4 part: the sequence is
//! `[fusion token, slot-1 tokens + pos_1, ..., slot-M tokens + pos_M]` (no pooled level-3 token)
//! and levels 1..3, which the decoder's skips and the DLKD pools still read, are the
//! parameter-free element-wise mean of the slots' features: no fusion convolutions, no residual
//! down-sampling chain. The mean keeps the level widths, so everything downstream is unchanged.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{FusionKind, ModelConfig};
use super::encoder::Features;
use super::layers::{
    dropout, freeze_conv, freeze_layer_norm, freeze_linear, frozen, linear, to_tokens, DownBlock,
    FusionConv,
};
use super::pool::AttnPool;
use crate::precision::fp32;

/// LayerNorm epsilon of the transformer.
const LN_EPS: f64 = 1e-5;
/// Dropout of the transformer layers (training only).
const DROPOUT: f64 = 0.1;

/// One post-norm transformer encoder layer (PyTorch `nn.TransformerEncoderLayer`, ReLU,
/// `batch_first`). Variables as in PyTorch: `self_attn.in_proj_weight`, `self_attn.in_proj_bias`,
/// `self_attn.out_proj.*`, `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`.
#[derive(Debug)]
pub(crate) struct TransformerLayer {
    in_proj_w: Tensor,
    in_proj_b: Tensor,
    out_proj: nn::Linear,
    linear1: nn::Linear,
    linear2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    heads: i64,
}

impl TransformerLayer {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, ffn: i64) -> Self {
        let a = p / "self_attn";
        let ln = nn::LayerNormConfig {
            eps: LN_EPS,
            ..Default::default()
        };
        let bound = (6.0 / (dim + 3 * dim) as f64).sqrt();
        TransformerLayer {
            in_proj_w: a.var(
                "in_proj_weight",
                &[3 * dim, dim],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            in_proj_b: a.zeros("in_proj_bias", &[3 * dim]),
            out_proj: linear(&(&a / "out_proj"), dim, dim),
            linear1: linear(&(p / "linear1"), dim, ffn),
            linear2: linear(&(p / "linear2"), ffn, dim),
            norm1: nn::layer_norm(p / "norm1", vec![dim], ln),
            norm2: nn::layer_norm(p / "norm2", vec![dim], ln),
            heads,
        }
    }

    /// `x`: `[B, L, E]`. In a bf16 forward the projections run in bfloat16 while the residual
    /// stream, the attention (scores, softmax, weighted sum) and the norms stay float32.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x.to_kind(Kind::Float);
        let s = x.size();
        let (b, l, e) = (s[0], s[1], s[2]);
        let d = e / self.heads;
        let qkv = x.linear(&self.in_proj_w, Some(&self.in_proj_b));
        let qkv = qkv.view([b, l, 3, self.heads, d]).permute([2, 0, 3, 1, 4]); // [3, B, H, L, d]
        let att = fp32(x.device(), || {
            let qkv = qkv.to_kind(Kind::Float);
            let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
            if train && q.device() == tch::Device::Cpu {
                // The attention weights written out, so that their dropout is ours (see `dropout`).
                let scores = q.matmul(&k.transpose(-2, -1)) * (1.0 / (d as f64).sqrt());
                dropout(&scores.softmax(-1, Kind::Float), DROPOUT, true).matmul(&v)
            } else {
                let p = if train { DROPOUT } else { 0.0 };
                Tensor::scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    None::<Tensor>,
                    p,
                    false,
                    None,
                    false,
                )
            }
        });
        let att = att.transpose(1, 2).reshape([b, l, e]).apply(&self.out_proj);
        let x = (x + dropout(&att, DROPOUT, train)).apply(&self.norm1);
        let hidden = x.apply(&self.linear1).relu();
        let ff = dropout(&hidden, DROPOUT, train).apply(&self.linear2);
        (&x + dropout(&ff, DROPOUT, train)).apply(&self.norm2)
    }

    /// Projections detached and stored as `kind`; the norms detached, float32.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        self.in_proj_w = frozen(&self.in_proj_w, kind);
        self.in_proj_b = frozen(&self.in_proj_b, kind);
        for l in [&mut self.out_proj, &mut self.linear1, &mut self.linear2] {
            freeze_linear(l, kind);
        }
        freeze_layer_norm(&mut self.norm1);
        freeze_layer_norm(&mut self.norm2);
    }
}

/// What HF gives the class-wise module and DLKD.
#[derive(Debug)]
pub(crate) struct Fused {
    /// Fused levels 1..3 and the unified level 4: `[B, w·2^i, H/2^(i+1), W/2^(i+1)]`.
    pub levels: Features,
    /// The output fusion token `[B, 8w]` (global fused feature).
    pub global: Tensor,
}

/// The convolutional levels 1..3 of HF and the pooled level-3 token they give level 4.
#[derive(Debug)]
struct ConvLevels {
    fuse: [FusionConv; 3],
    res1: DownBlock,
    res2: DownBlock,
    pool_e3: AttnPool,
}

impl ConvLevels {
    fn new(p: &nn::Path, w: i64, m: i64, d: i64) -> Self {
        ConvLevels {
            fuse: [
                FusionConv::new(&(p / "conv_fusion_e1"), w, m),
                FusionConv::new(&(p / "conv_fusion_e2"), 2 * w, m),
                FusionConv::new(&(p / "conv_fusion_e3"), 4 * w, m),
            ],
            res1: DownBlock::new(&(p / "conv_res1"), w, 2 * w, true),
            res2: DownBlock::new(&(p / "conv_res2"), 2 * w, 4 * w, true),
            pool_e3: AttnPool::new(&(p / "pool_e3"), 4 * w, Some(d)),
        }
    }

    /// Fused levels 1..3 and the pooled level-3 token `[B, 1, D]`.
    fn forward_t(&self, slots: &[&Features], train: bool) -> ([Tensor; 3], Tensor) {
        let level = |i: usize| {
            Tensor::cat(
                &slots
                    .iter()
                    .map(|f| f[i].shallow_clone())
                    .collect::<Vec<_>>(),
                1,
            )
        };
        let f1 = self.fuse[0].forward(&level(0));
        let f2 = self.fuse[1].forward(&level(1)) + self.res1.forward_t(&f1, train);
        let f3 = self.fuse[2].forward(&level(2)) + self.res2.forward_t(&f2, train);
        let pooled = self.pool_e3.forward(&f3).unsqueeze(1).to_kind(Kind::Float);
        ([f1, f2, f3], pooled)
    }

    fn prepare_inference(&mut self, kind: Kind) {
        self.fuse.iter_mut().for_each(|f| f.prepare_inference(kind));
        self.res1.prepare_inference(kind);
        self.res2.prepare_inference(kind);
        self.pool_e3.prepare_inference(kind);
    }
}

/// Levels 1..3 of the "no HF" ablation: the element-wise mean of the slots' features.
fn slot_means(slots: &[&Features]) -> [Tensor; 3] {
    let m = slots.len() as f64;
    std::array::from_fn(|i| {
        let sum = slots[1..]
            .iter()
            .fold(slots[0][i].shallow_clone(), |acc, f| acc + &f[i]);
        sum / m
    })
}

/// HF over M slots. Variables: `conv_fusion_e{1,2,3}.*`, `conv_res{1,2}.*`, `pool_e3.*` (not in
/// the `level4` ablation), `fusion_token`, `pos_{i}` (one per slot), `transformer.layers.{j}.*`,
/// `unify.*`.
#[derive(Debug)]
pub(crate) struct HierarchicalFusion {
    /// Levels 1..3; `None` in the `level4` ablation (slot means instead).
    conv: Option<ConvLevels>,
    fusion_token: Tensor,
    pos: Vec<Tensor>,
    layers: Vec<TransformerLayer>,
    unify: nn::Conv2D,
    grid: [i64; 2],
}

impl HierarchicalFusion {
    /// HF for the model `cfg`: one slot per modality, base width w (levels w .. 8w), the
    /// level-4 grid `[H/16, W/16]` of the crop (what the positional embeddings are made for), the
    /// transformer's heads, feed-forward size and depth, and `cfg.fusion`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let w = cfg.base_width;
        let slots = cfg.modalities.len();
        let m = slots as i64;
        let d = 8 * w;
        let grid = [cfg.crop[0] / 16, cfg.crop[1] / 16];
        let n = grid[0] * grid[1];
        let t = p / "transformer" / "layers";
        HierarchicalFusion {
            conv: match cfg.fusion {
                FusionKind::Hierarchical => Some(ConvLevels::new(p, w, m, d)),
                FusionKind::Level4 => None,
            },
            fusion_token: p.zeros("fusion_token", &[1, 1, d]),
            pos: (0..slots)
                .map(|i| p.zeros(&format!("pos_{i}"), &[1, n, d]))
                .collect(),
            layers: (0..cfg.depth)
                .map(|j| TransformerLayer::new(&(&t / j), d, cfg.heads, cfg.ffn_dim))
                .collect(),
            unify: super::layers::conv2d(p / "unify", m * d, d, 1, Default::default()),
            grid,
        }
    }

    /// Fuses the features of the M slots (in modality order).
    pub(crate) fn forward_t(&self, slots: &[&Features], train: bool) -> Fused {
        let (low, pooled) = match &self.conv {
            Some(conv) => {
                let (low, pooled) = conv.forward_t(slots, train);
                (low, Some(pooled))
            }
            None => (slot_means(slots), None),
        };

        let b = slots[0][3].size()[0];
        let d = self.fusion_token.size()[2];
        let n = self.grid[0] * self.grid[1];
        let mut seq = Vec::with_capacity(slots.len() + 2);
        seq.push(self.fusion_token.expand([b, 1, d], false));
        for (f, pos) in slots.iter().zip(&self.pos) {
            seq.push(to_tokens(&f[3]) + pos);
        }
        seq.extend(pooled);
        let mut out = Tensor::cat(&seq, 1);
        for layer in &self.layers {
            out = layer.forward_t(&out, train);
        }
        let global = out.select(1, 0);
        let m = slots.len() as i64;
        // Slot tokens [B, M·N, D] to maps [B, M·D, h, w], slot-major along channels, stored
        // channels-last.
        let [gh, gw] = self.grid;
        let maps = out
            .narrow(1, 1, m * n)
            .reshape([b, m, gh, gw, d])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, gh, gw, m * d])
            .permute([0, 3, 1, 2]);
        let f4 = self.unify.forward(&maps);
        let [f1, f2, f3] = low;
        Fused {
            levels: [f1, f2, f3, f4],
            global,
        }
    }

    /// For inference: BatchNorm folded, convolutions and projections stored as `kind`, the
    /// fusion token, positional embeddings and norms float32; everything detached.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        if let Some(conv) = &mut self.conv {
            conv.prepare_inference(kind);
        }
        self.fusion_token = frozen(&self.fusion_token, Kind::Float);
        self.pos = self.pos.iter().map(|p| frozen(p, Kind::Float)).collect();
        self.layers
            .iter_mut()
            .for_each(|l| l.prepare_inference(kind));
        freeze_conv(&mut self.unify, kind);
    }
}
