//! Building blocks shared by every part of the network: the reference's `cnn_block`,
//! `tcnn_block` and `general_conv2d_prenorm`, plus the resampling helpers, and what each block
//! does to prepare for inference (`prepare_inference`: BatchNorm folded into its convolution,
//! weights detached and, for bf16, stored in bfloat16).

use tch::nn;
use tch::{Kind, Tensor};

/// Slope of every LeakyReLU in DIS2.
pub(crate) const LEAKY_SLOPE: f64 = 0.2;
/// Epsilon of the per-image normalisation inside the pre-norm convolutions.
const NORM_EPS: f64 = 1e-5;
/// Epsilon of every BatchNorm.
const BN_EPS: f64 = 1e-5;

/// LeakyReLU with slope 0.2.
pub(crate) fn leaky(x: &Tensor) -> Tensor {
    crate::native::leaky_relu(x, LEAKY_SLOPE)
}

/// Normalises every image of a batch over all of (C, H, W), without affine parameters.
///
/// The reference applies `nn.InstanceNorm3d` to 4-D tensors, which PyTorch reads as one unbatched
/// 3-D sample: each image is normalised over channels and pixels together. That is `group_norm`
/// with a single group and no weight.
pub(crate) fn image_norm(x: &Tensor) -> Tensor {
    x.group_norm(1, None::<Tensor>, None::<Tensor>, NORM_EPS, false)
}

/// The same tensor `[N, C, H, W]` stored channels-last (NHWC strides). Convolutions, norms and
/// resampling on CPU (oneDNN) and GPU are markedly faster in that layout, and every op keeps it,
/// so the network converts its inputs once. Numbers are unchanged up to summation order.
pub(crate) fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// `[N, C, H, W]` to tokens `[N, H·W, C]` (a view when `x` is channels-last).
pub(crate) fn to_tokens(x: &Tensor) -> Tensor {
    let s = x.size();
    x.permute([0, 2, 3, 1]).reshape([s[0], s[2] * s[3], s[1]])
}

/// Dropout with probability `p` when `train` (identity otherwise). On the CPU the mask comes from
/// [`crate::native::dropout_mask`] (PyTorch's Bernoulli draws are the slowest part of the
/// transformer there); elsewhere PyTorch's dropout. Either way `x · mask` with mask values
/// `1/(1-p)` or 0, as PyTorch computes it.
///
/// A bfloat16 `x` on the CPU is multiplied by the float32 mask: the result is float32.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x.shallow_clone();
    }
    if x.device() == tch::Device::Cpu && matches!(x.kind(), Kind::Float | Kind::BFloat16) {
        // Only fails for p outside [0, 1), which the network never asks for.
        let mask = crate::native::dropout_mask(x, p, None).unwrap_or_else(|e| panic!("{e:#}"));
        x * mask
    } else {
        x.dropout(p, true)
    }
}

/// Bilinear resize to `[h, w]` with `align_corners = true` (the reference's `nn.Upsample`).
pub(crate) fn resize_aligned(x: &Tensor, size: [i64; 2]) -> Tensor {
    x.upsample_bilinear2d(size, true, None, None)
}

/// Doubles height and width, bilinear with `align_corners = true` (the reference's `up2`).
pub(crate) fn up2(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    resize_aligned(x, [2 * h, 2 * w])
}

/// `nn::conv2d` with the weight stored channels-last (`[O, I, kh, kw]` with NHWC strides): the
/// layout the CPU convolutions (oneDNN) read, so they do not copy the weight at every call.
/// Checkpoints are written contiguous and loaded with `copy_`, so files are unchanged.
pub fn conv2d<'a, P: std::borrow::Borrow<nn::Path<'a>>>(
    p: P,
    c_in: i64,
    c_out: i64,
    k: i64,
    cfg: nn::ConvConfig,
) -> nn::Conv2D {
    let mut conv = nn::conv2d(p, c_in, c_out, k, cfg);
    tch::no_grad(|| conv.ws.set_data(&channels_last(&conv.ws)));
    conv
}

fn bn(p: &nn::Path, dim: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        momentum: 0.1,
        eps: BN_EPS,
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, dim, cfg)
}

/// A convolution followed by BatchNorm unless it is a "first layer": the reference's
/// `cnn_block` (`DownBlock`) and `tcnn_block` (`UpBlock`). Variables: `0.weight`, `0.bias`,
/// `1.{weight,bias,running_mean,running_var}` with BatchNorm, or `weight`, `bias` without.
#[derive(Debug)]
pub(crate) struct ConvBn<C> {
    conv: C,
    bn: Option<nn::BatchNorm>,
}

/// Reference `cnn_block`: a 4x4 stride-2 convolution (padding 1) [+ BatchNorm].
pub(crate) type DownBlock = ConvBn<nn::Conv2D>;
/// Reference `tcnn_block`: a 4x4 stride-2 transposed convolution (padding 1) [+ BatchNorm].
pub(crate) type UpBlock = ConvBn<nn::ConvTranspose2D>;

impl<C: nn::Module> ConvBn<C> {
    /// Builds the convolution with `make` under `0` (with BatchNorm under `1`) or directly
    /// under `p` (without).
    fn build(p: &nn::Path, c_out: i64, with_bn: bool, make: impl FnOnce(&nn::Path) -> C) -> Self {
        if with_bn {
            ConvBn {
                conv: make(&(p / "0")),
                bn: Some(bn(&(p / "1"), c_out)),
            }
        } else {
            ConvBn {
                conv: make(p),
                bn: None,
            }
        }
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv);
        match &self.bn {
            Some(bn) => y.apply_t(bn, train),
            None => y,
        }
    }
}

impl<C: ConvWeights> ConvBn<C> {
    /// For inference: the BatchNorm (its running statistics, as in eval mode) folded into the
    /// convolution's weight and bias, so that one op remains; the weights detached and stored as
    /// `kind` (float32 or bfloat16). `forward_t(x, false)` is unchanged up to float rounding.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        if let Some(bn) = self.bn.take() {
            fold_batch_norm(&mut self.conv, &bn);
        }
        let (ws, bs) = self.conv.weights();
        freeze_weights(ws, bs, kind);
    }
}

/// The weight and bias of a convolution, and the dimension of its weight that indexes output
/// channels (0 for `[O, I, kh, kw]`, 1 for a transposed convolution's `[I, O, kh, kw]`): what
/// BatchNorm folding changes.
pub(crate) trait ConvWeights {
    const OUT_DIM: usize;
    fn weights(&mut self) -> (&mut Tensor, &mut Option<Tensor>);
}

impl ConvWeights for nn::Conv2D {
    const OUT_DIM: usize = 0;
    fn weights(&mut self) -> (&mut Tensor, &mut Option<Tensor>) {
        (&mut self.ws, &mut self.bs)
    }
}

impl ConvWeights for nn::ConvTranspose2D {
    const OUT_DIM: usize = 1;
    fn weights(&mut self) -> (&mut Tensor, &mut Option<Tensor>) {
        (&mut self.ws, &mut self.bs)
    }
}

/// `BN(conv(x))` in eval mode as one convolution: with `s = γ / sqrt(running_var + eps)`, the
/// weight times `s` per output channel and the bias `(b - running_mean) · s + β`, computed in
/// float64 and stored channels-last in the weight's dtype.
fn fold_batch_norm<C: ConvWeights>(conv: &mut C, bn: &nn::BatchNorm) {
    tch::no_grad(|| {
        let f64_of = |t: &Tensor| t.detach().to_kind(Kind::Double);
        let var = f64_of(&bn.running_var);
        let gamma = bn.ws.as_ref().map_or_else(|| var.ones_like(), f64_of);
        let beta = bn.bs.as_ref().map_or_else(|| var.zeros_like(), f64_of);
        let scale = gamma / (var + BN_EPS).sqrt();
        let (ws, bs) = conv.weights();
        let mut shape = [1i64; 4];
        shape[C::OUT_DIM] = -1;
        let folded = (f64_of(ws) * scale.view(shape)).to_kind(ws.kind());
        let bias = bs.as_ref().map_or_else(|| scale.zeros_like(), f64_of);
        let folded_bias = (bias - f64_of(&bn.running_mean)) * &scale + beta;
        *bs = Some(folded_bias.to_kind(ws.kind()));
        *ws = channels_last(&folded);
    })
}

/// A weight of an inference-only model: detached (no autograd state) and stored as `kind`,
/// keeping its layout.
pub(crate) fn frozen(t: &Tensor, kind: Kind) -> Tensor {
    t.detach().to_kind(kind)
}

fn freeze_weights(ws: &mut Tensor, bs: &mut Option<Tensor>, kind: Kind) {
    *ws = frozen(ws, kind);
    *bs = bs.as_ref().map(|b| frozen(b, kind));
}

/// [`frozen`] for a convolution's weight and bias.
pub(crate) fn freeze_conv(conv: &mut nn::Conv2D, kind: Kind) {
    freeze_weights(&mut conv.ws, &mut conv.bs, kind);
}

/// [`frozen`] for a linear layer's weight and bias.
pub(crate) fn freeze_linear(linear: &mut nn::Linear, kind: Kind) {
    freeze_weights(&mut linear.ws, &mut linear.bs, kind);
}

/// A LayerNorm's parameters detached, kept float32 (normalisations stay float32).
pub(crate) fn freeze_layer_norm(norm: &mut nn::LayerNorm) {
    norm.ws = norm.ws.as_ref().map(|w| frozen(w, Kind::Float));
    norm.bs = norm.bs.as_ref().map(|b| frozen(b, Kind::Float));
}

impl ConvBn<nn::Conv2D> {
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, with_bn: bool) -> Self {
        let cfg = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Self::build(p, c_out, with_bn, |q| conv2d(q, c_in, c_out, 4, cfg))
    }
}

impl ConvBn<nn::ConvTranspose2D> {
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, with_bn: bool) -> Self {
        let cfg = nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Self::build(p, c_out, with_bn, |q| {
            let mut conv = nn::conv_transpose2d(q, c_in, c_out, 4, cfg);
            // Channels-last like `conv2d`'s weights, for the same reason.
            tch::no_grad(|| conv.ws.set_data(&channels_last(&conv.ws)));
            conv
        })
    }
}

/// Reference `general_conv2d_prenorm`: per-image normalisation, LeakyReLU(0.2), then a
/// convolution (3x3 with padding 1, or 1x1). Variables: `conv.weight`, `conv.bias`.
///
/// On the CPU (float32, or bfloat16 in a bf16 forward) the normalisation, the LeakyReLU and a
/// reflect padding run as one native op ([`crate::native::prenorm_leaky`], statistics in float32)
/// followed by an unpadded convolution; elsewhere as PyTorch's separate ops
/// ([`prenorm_leaky_reference`]). The numbers agree to float rounding.
#[derive(Debug)]
pub(crate) struct PreNormConv {
    conv: nn::Conv2D,
    /// Reflect padding of one pixel (3x3 convolutions of the decoders) rather than the
    /// convolution's own zero padding.
    reflect: bool,
}

impl PreNormConv {
    /// A 3x3 convolution; `reflect` selects reflect padding instead of zeros.
    pub(crate) fn k3(p: &nn::Path, c_in: i64, c_out: i64, reflect: bool) -> Self {
        let padding_mode = if reflect {
            nn::PaddingMode::Reflect
        } else {
            nn::PaddingMode::Zeros
        };
        let cfg = nn::ConvConfig {
            padding: 1,
            padding_mode,
            ..Default::default()
        };
        PreNormConv {
            conv: conv2d(p / "conv", c_in, c_out, 3, cfg),
            reflect,
        }
    }

    /// A 1x1 convolution.
    pub(crate) fn k1(p: &nn::Path, c_in: i64, c_out: i64) -> Self {
        PreNormConv {
            conv: conv2d(p / "conv", c_in, c_out, 1, Default::default()),
            reflect: false,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let native_kind = matches!(x.kind(), Kind::Float | Kind::BFloat16);
        if !(x.device() == tch::Device::Cpu && native_kind) {
            return leaky(&image_norm(x)).apply(&self.conv);
        }
        // Only fails on inputs the network never builds (not 4-D, or a reflect pad of a map
        // smaller than 2x2, which the crop-size check rules out).
        let y = crate::native::prenorm_leaky(x, LEAKY_SLOPE, NORM_EPS, self.reflect)
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.conv_normalised(&y)
    }

    /// The convolution of `cat([skip repeated k times, own], 1)`: `skip` `[B, Cs, H, W]` (one
    /// map per window) and `own` `[B·k, Co, H, W]` (k maps per window, window-major) give
    /// `[B·k, C_out, H, W]`. In an inference forward on the CPU (no gradients) the pre-norm
    /// reads both where they lie ([`crate::native::prenorm_leaky_joined`]); otherwise the joined
    /// input is written out once, channels-last (the repeated skip a broadcast view), and
    /// [`Self::forward`] runs.
    ///
    /// # Panics
    /// If `own` is not `k` maps per map of `skip` of the same height and width (the decoders
    /// always build it so).
    pub fn forward_joined(&self, skip: &Tensor, own: &Tensor, k: i64) -> Tensor {
        if !joins_natively(skip, own) {
            return self.forward(&join_repeated(skip, own, k));
        }
        // Only fails on inputs the network never builds (see `forward`).
        let y =
            crate::native::prenorm_leaky_joined(skip, own, k, LEAKY_SLOPE, NORM_EPS, self.reflect)
                .unwrap_or_else(|e| panic!("{e:#}"));
        self.conv_normalised(&y)
    }

    /// The convolution of the pre-normalised input `y` (the padding already in it when
    /// `reflect`).
    fn conv_normalised(&self, y: &Tensor) -> Tensor {
        if self.reflect {
            let c = &self.conv;
            y.conv2d(&c.ws, c.bs.as_ref(), [1, 1], [0, 0], [1, 1], 1)
        } else {
            y.apply(&self.conv)
        }
    }

    /// The convolution's weights detached and stored as `kind`.
    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        freeze_conv(&mut self.conv, kind);
    }
}

/// Whether [`PreNormConv::forward_joined`] normalises `skip` and `own` in place: float32 or
/// bfloat16 of one kind on the CPU, neither needing gradients (the joined kernel has no backward).
fn joins_natively(skip: &Tensor, own: &Tensor) -> bool {
    let kind = own.kind();
    own.device() == tch::Device::Cpu
        && matches!(kind, Kind::Float | Kind::BFloat16)
        && skip.kind() == kind
        && !(skip.requires_grad() || own.requires_grad())
}

/// `cat([skip repeated k times, own], 1)` for `skip` `[B, Cs, H, W]` and `own`
/// `[B·k, Co, H, W]`: `[B·k, Cs + Co, H, W]`, channels-last, written in one copy (the repeated
/// skip is a broadcast view).
fn join_repeated(skip: &Tensor, own: &Tensor, k: i64) -> Tensor {
    let (t, u) = (skip.size(), own.size());
    let b = t[0];
    let skip = skip
        .permute([0, 2, 3, 1])
        .unsqueeze(1)
        .expand([b, k, t[2], t[3], t[1]], false);
    let own = own.permute([0, 2, 3, 1]).reshape([b, k, u[2], u[3], u[1]]);
    Tensor::cat(&[skip, own], 4)
        .reshape([b * k, t[2], t[3], t[1] + u[1]])
        .permute([0, 3, 1, 2])
}

/// What [`crate::native::prenorm_leaky`] computes, as PyTorch's separate ops (the path off the
/// CPU, and the reference of its tests).
#[cfg(test)]
pub(crate) fn prenorm_leaky_reference(x: &Tensor, pad: bool) -> Tensor {
    let y = leaky(&image_norm(x));
    if pad {
        y.reflection_pad2d([1, 1, 1, 1])
    } else {
        y
    }
}

/// Reference `fusion_prenorm_2d`: pre-norm 1x1 (M·C to C), 3x3 and 1x1 convolutions that fuse the
/// channel-concatenated features of M modality slots. Variables: `fusion_layer.{0,1,2}.conv.*`.
#[derive(Debug)]
pub(crate) struct FusionConv {
    layers: [PreNormConv; 3],
}

impl FusionConv {
    pub fn new(p: &nn::Path, channels: i64, slots: i64) -> Self {
        let p = p / "fusion_layer";
        FusionConv {
            layers: [
                PreNormConv::k1(&(&p / "0"), channels * slots, channels),
                PreNormConv::k3(&(&p / "1"), channels, channels, false),
                PreNormConv::k1(&(&p / "2"), channels, channels),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |x, l| l.forward(&x))
    }

    pub(crate) fn prepare_inference(&mut self, kind: Kind) {
        self.layers
            .iter_mut()
            .for_each(|l| l.prepare_inference(kind));
    }
}

/// A linear layer whose variables are `weight` and `bias` (PyTorch layout).
pub(crate) fn linear(p: &nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    nn::linear(p, c_in, c_out, Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let scale = b.abs().max().double_value(&[]).max(1e-12);
        (a - b).abs().max().double_value(&[]) / scale
    }

    /// The native pre-norm op equals PyTorch's group_norm + leaky_relu (+ reflection_pad2d) in
    /// values and input gradients, for both layouts, with and without padding, keeps the layout,
    /// and gives the same bits with one thread and with two.
    #[test]
    fn native_prenorm_matches_pytorch_ops() {
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        for (shape, cl) in [
            ([3i64, 5, 7, 6], false),
            ([3, 5, 7, 6], true),
            ([2, 16, 2, 3], true),
            ([1, 3, 33, 2], false),
            ([40, 8, 16, 16], true),
        ] {
            // An offset and a scale, as activations have.
            let base = Tensor::randn(shape, opts) * 3.0 + 1.5;
            let x = if cl { channels_last(&base) } else { base }.set_requires_grad(true);
            for pad in [false, true] {
                let fused = crate::native::prenorm_leaky(&x, LEAKY_SLOPE, NORM_EPS, pad).unwrap();
                let want = prenorm_leaky_reference(&x, pad);
                assert_eq!(fused.size(), want.size());
                assert_eq!(fused.stride(), channels_last_or_not(&want, cl).stride());
                let d = max_rel_diff(&fused, &want);
                assert!(
                    d < 1e-5,
                    "{shape:?} cl={cl} pad={pad}: outputs differ by {d}"
                );
                let g = Tensor::randn(fused.size(), opts);
                let grad = |y: &Tensor| {
                    Tensor::run_backward(&[(y * &g).sum(Kind::Float)], &[&x], false, false)
                        .remove(0)
                };
                let (gf, gw) = (grad(&fused), grad(&want));
                let d = max_rel_diff(&gf, &gw);
                assert!(
                    d < 1e-4,
                    "{shape:?} cl={cl} pad={pad}: gradients differ by {d}"
                );

                let threads = crate::native::set_thread_local_threads(1);
                let one = crate::native::prenorm_leaky(&x, LEAKY_SLOPE, NORM_EPS, pad).unwrap();
                let g_one = grad(&one);
                crate::native::set_thread_local_threads(threads);
                assert!(
                    one.equal(&fused) && g_one.equal(&gf),
                    "thread count changed the numbers"
                );
            }
        }
    }

    fn channels_last_or_not(x: &Tensor, cl: bool) -> Tensor {
        if cl {
            channels_last(x)
        } else {
            x.contiguous()
        }
    }

    /// The native dropout keeps about 1 - p of the elements, scaled by 1/(1-p); a seed gives
    /// the same mask whatever the thread count, and successive draws differ.
    #[test]
    fn native_dropout_masks() {
        let x = Tensor::ones([64, 1000], (Kind::Float, Device::Cpu));
        let a = crate::native::dropout_mask(&x, 0.1, Some(5)).unwrap();
        let threads = crate::native::set_thread_local_threads(1);
        let a1 = crate::native::dropout_mask(&x, 0.1, Some(5)).unwrap();
        crate::native::set_thread_local_threads(threads);
        assert!(a.equal(&a1), "the thread count changed the mask");
        let b = crate::native::dropout_mask(&x, 0.1, Some(6)).unwrap();
        assert!(!a.equal(&b), "two seeds gave the same mask");
        assert!(
            !dropout(&x, 0.1, true).equal(&dropout(&x, 0.1, true)),
            "two draws, one mask"
        );
        let kept = a
            .gt(0.0)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        let scale = a.max().double_value(&[]);
        assert!((scale - 1.0 / 0.9).abs() < 1e-6, "scale {scale}");
        // Rows are not copies of one another (the hash mixes the whole index).
        assert!(!a.get(0).equal(&a.get(1)));
        assert!(dropout(&x, 0.1, false).equal(&x));
    }

    /// The bfloat16 path of the native pre-norm op: values and input gradients within bfloat16
    /// rounding of the float32 op on the same (bfloat16-representable) input, layout kept.
    #[test]
    fn native_prenorm_in_bf16_matches_float32() {
        tch::manual_seed(12);
        let opts = (Kind::Float, Device::Cpu);
        for (shape, cl) in [([3i64, 5, 7, 6], false), ([4, 16, 9, 8], true)] {
            let base = (Tensor::randn(shape, opts) * 3.0 + 1.5).to_kind(Kind::BFloat16);
            let x16 = if cl { channels_last(&base) } else { base };
            let x16 = x16.set_requires_grad(true);
            let x32 = x16.detach().to_kind(Kind::Float).set_requires_grad(true);
            for pad in [false, true] {
                let y16 = crate::native::prenorm_leaky(&x16, LEAKY_SLOPE, NORM_EPS, pad).unwrap();
                let y32 = crate::native::prenorm_leaky(&x32, LEAKY_SLOPE, NORM_EPS, pad).unwrap();
                assert_eq!(y16.kind(), Kind::BFloat16);
                assert_eq!(y16.stride(), y32.stride(), "{shape:?} cl={cl} pad={pad}");
                let d = max_rel_diff(&y16.to_kind(Kind::Float), &y32);
                assert!(
                    d < 1e-2,
                    "{shape:?} cl={cl} pad={pad}: outputs differ by {d}"
                );
                let g = Tensor::randn(y32.size(), opts).to_kind(Kind::BFloat16);
                let grad = |y: &Tensor, x: &Tensor| {
                    let loss = (y.to_kind(Kind::Float) * g.to_kind(Kind::Float)).sum(Kind::Float);
                    Tensor::run_backward(&[loss], &[x], false, false).remove(0)
                };
                let (g16, g32) = (grad(&y16, &x16), grad(&y32, &x32));
                assert_eq!(g16.kind(), Kind::BFloat16);
                let d = max_rel_diff(&g16.to_kind(Kind::Float), &g32);
                assert!(
                    d < 2e-2,
                    "{shape:?} cl={cl} pad={pad}: gradients differ by {d}"
                );
            }
        }
    }

    /// Folding BatchNorm into the convolution leaves the eval-mode output unchanged (to 1e-5 in
    /// float32), for convolutions and transposed convolutions, and removes the BatchNorm.
    #[test]
    fn folded_batch_norm_equals_convolution_then_batch_norm() {
        tch::manual_seed(13);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut down = DownBlock::new(&(vs.root() / "down"), 6, 10, true);
        let mut up = UpBlock::new(&(vs.root() / "up"), 10, 6, true);
        // BatchNorm statistics and affine parameters away from their initial 0, 1, 1, 0.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let r = Tensor::rand_like(&t);
                if name.ends_with("running_var") || name.ends_with("1.weight") {
                    t.copy_(&(r * 2.0 + 0.5));
                } else if name.ends_with("running_mean") || name.ends_with("1.bias") {
                    t.copy_(&(r * 2.0 - 1.0));
                }
            }
        });
        let x = channels_last(&Tensor::randn([2, 6, 16, 16], (Kind::Float, Device::Cpu)));
        let (want_down, want_up) = tch::no_grad(|| {
            let d = down.forward_t(&x, false);
            (d.shallow_clone(), up.forward_t(&d, false))
        });
        down.prepare_inference(Kind::Float);
        up.prepare_inference(Kind::Float);
        assert!(down.bn.is_none() && up.bn.is_none());
        let got_down = down.forward_t(&x, false);
        let got_up = up.forward_t(&want_down, false);
        assert!(
            !got_down.requires_grad(),
            "a folded block kept autograd state"
        );
        for (got, want) in [(got_down, want_down), (got_up, want_up)] {
            let d = max_rel_diff(&got, &want);
            assert!(
                d < 1e-5,
                "folded output differs by {d} of its largest value"
            );
        }
    }

    #[test]
    fn native_prenorm_refuses_what_it_cannot_take() {
        let opts = (Kind::Float, Device::Cpu);
        let tiny = Tensor::zeros([1, 2, 1, 4], opts);
        let err = crate::native::prenorm_leaky(&tiny, 0.2, 1e-5, true).unwrap_err();
        assert!(format!("{err:#}").contains("2x2"), "{err:#}");
        let doubles = Tensor::zeros([1, 2, 4, 4], (Kind::Double, Device::Cpu));
        assert!(crate::native::prenorm_leaky(&doubles, 0.2, 1e-5, false).is_err());
    }

    /// The joined pre-norm kernel equals the pre-norm of the written-out join (values, size,
    /// channels-last output) in float32 and bfloat16, with and without padding, from
    /// channels-last and NCHW inputs, for 2 x 2 maps, one row per chunk and several rows per
    /// chunk, and gives the same bits with one thread and with two.
    #[test]
    fn joined_prenorm_equals_the_prenorm_of_the_written_out_join() {
        tch::manual_seed(14);
        let opts = (Kind::Float, Device::Cpu);
        for (b, k, cs, co, h, w) in [(3, 4, 5, 6, 7, 9), (2, 3, 4, 4, 2, 2), (1, 1, 3, 5, 40, 18)] {
            let skip = Tensor::randn([b, cs, h, w], opts) * 2.0 + 0.5;
            let own = Tensor::randn([b * k, co, h, w], opts) - 1.0;
            for ((kind, tolerance), pad, cl) in
                kernel_cases(&[(Kind::Float, 1e-5), (Kind::BFloat16, 1e-2)])
            {
                let layout = |t: &Tensor| channels_last_or_not(&t.to_kind(kind), cl);
                let (skip, own) = (layout(&skip), layout(&own));
                let joined =
                    crate::native::prenorm_leaky_joined(&skip, &own, k, 0.2, 1e-5, pad).unwrap();
                let join = join_repeated(&skip, &own, k);
                let want = crate::native::prenorm_leaky(&join, 0.2, 1e-5, pad).unwrap();
                let case = format!("{:?} {kind:?} pad={pad} cl={cl}", own.size());
                assert_eq!(joined.size(), want.size(), "{case}");
                assert_eq!(joined.stride(), channels_last(&want).stride(), "{case}");
                let d = max_rel_diff(&joined.to_kind(Kind::Float), &want.to_kind(Kind::Float));
                assert!(d < tolerance, "{case}: {d}");

                let threads = crate::native::set_thread_local_threads(1);
                let one = crate::native::prenorm_leaky_joined(&skip, &own, k, 0.2, 1e-5, pad);
                crate::native::set_thread_local_threads(threads);
                assert!(
                    one.unwrap().equal(&joined),
                    "{case}: thread count changed the numbers"
                );
            }
        }
    }

    /// The cases of [`joined_prenorm_equals_the_prenorm_of_the_written_out_join`]: each
    /// (kind, tolerance) with and without padding, channels-last and not.
    fn kernel_cases(kinds: &[(Kind, f64)]) -> Vec<((Kind, f64), bool, bool)> {
        let mut out = Vec::new();
        for &kt in kinds {
            for pad in [true, false] {
                for cl in [true, false] {
                    out.push((kt, pad, cl));
                }
            }
        }
        out
    }

    /// The joined pre-norm convolution equals the convolution of the written-out join, in
    /// float32 and bfloat16 (autocast), with reflect and zero padding, and takes the joined
    /// kernel exactly when it may: without gradients on the CPU. With gradients it takes the
    /// written-out join and keeps the graph; the kernel refuses inputs needing gradients and
    /// sizes that do not pair.
    #[test]
    fn joined_prenorm_conv_equals_the_written_out_join() {
        tch::manual_seed(15);
        let vs = nn::VarStore::new(Device::Cpu);
        let opts = (Kind::Float, Device::Cpu);
        let (b, k, cs, co, h, w) = (3, 4, 5, 6, 7, 9);
        let skip = Tensor::randn([b, cs, h, w], opts) * 2.0 + 0.5;
        let own = Tensor::randn([b * k, co, h, w], opts) - 1.0;
        for reflect in [true, false] {
            let conv = if reflect {
                PreNormConv::k3(&(vs.root() / "r"), cs + co, 8, true)
            } else {
                PreNormConv::k1(&(vs.root() / "z"), cs + co, 8)
            };
            for (kind, tolerance) in [(Kind::Float, 1e-5), (Kind::BFloat16, 2e-2)] {
                let (skip, own) = (
                    channels_last(&skip.to_kind(kind)),
                    channels_last(&own.to_kind(kind)),
                );
                assert!(joins_natively(&skip, &own));
                let run = |f: &dyn Fn() -> Tensor| {
                    tch::no_grad(|| {
                        crate::precision::with_precision(Device::Cpu, precision_of(kind), f)
                    })
                };
                let joined = run(&|| conv.forward_joined(&skip, &own, k));
                let want = run(&|| conv.forward(&join_repeated(&skip, &own, k)));
                assert_eq!(joined.size(), [b * k, 8, h, w]);
                let d = max_rel_diff(&joined.to_kind(Kind::Float), &want.to_kind(Kind::Float));
                assert!(d < tolerance, "{kind:?}, reflect {reflect}: {d}");
            }
        }
        let conv = PreNormConv::k3(&(vs.root() / "g"), cs + co, 8, true);
        let skip = skip.set_requires_grad(true);
        assert!(!joins_natively(&skip, &own));
        assert!(!joins_natively(
            &skip.detach(),
            &own.to_kind(Kind::BFloat16)
        ));
        let y = conv.forward_joined(&skip, &own, k);
        y.sum(Kind::Float).backward();
        assert_eq!(skip.grad().size(), [b, cs, h, w]);
        let err = crate::native::prenorm_leaky_joined(&skip, &own, k, 0.2, 1e-5, true).unwrap_err();
        assert!(format!("{err:#}").contains("inference only"), "{err:#}");
        let wrong = Tensor::zeros([b * k + 1, co, h, w], opts);
        let err = crate::native::prenorm_leaky_joined(&skip.detach(), &wrong, k, 0.2, 1e-5, true)
            .unwrap_err();
        assert!(format!("{err:#}").contains("images per image"), "{err:#}");
    }

    fn precision_of(kind: Kind) -> crate::precision::Precision {
        if kind == Kind::Float {
            crate::precision::Precision::Fp32
        } else {
            crate::precision::Precision::Bf16
        }
    }
}
