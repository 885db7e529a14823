//! Building blocks shared by every part of the network: the reference's `cnn_block`,
//! `tcnn_block` and `general_conv2d_prenorm`, plus the resampling helpers.

use tch::nn;
use tch::Tensor;

/// Slope of every LeakyReLU in DIS2.
pub const LEAKY_SLOPE: f64 = 0.2;
/// Epsilon of the per-image normalisation inside the pre-norm convolutions.
const NORM_EPS: f64 = 1e-5;

/// LeakyReLU with slope 0.2.
pub fn leaky(x: &Tensor) -> Tensor {
    crate::native::leaky_relu(x, LEAKY_SLOPE)
}

/// Normalises every image of a batch over all of (C, H, W), without affine parameters.
///
/// The reference applies `nn.InstanceNorm3d` to 4-D tensors, which PyTorch reads as one unbatched
/// 3-D sample: each image is normalised over channels and pixels together. That is `group_norm`
/// with a single group and no weight.
pub fn image_norm(x: &Tensor) -> Tensor {
    x.group_norm(1, None::<Tensor>, None::<Tensor>, NORM_EPS, false)
}

/// The same tensor `[N, C, H, W]` stored channels-last (NHWC strides). Convolutions, norms and
/// resampling on CPU (oneDNN) and GPU are markedly faster in that layout, and every op keeps it,
/// so the network converts its inputs once. Numbers are unchanged up to summation order.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// `[N, C, H, W]` to tokens `[N, H·W, C]` (a view when `x` is channels-last).
pub fn to_tokens(x: &Tensor) -> Tensor {
    let s = x.size();
    x.permute([0, 2, 3, 1]).reshape([s[0], s[2] * s[3], s[1]])
}

/// Bilinear resize to `[h, w]` with `align_corners = true` (the reference's `nn.Upsample`).
pub fn resize_aligned(x: &Tensor, size: [i64; 2]) -> Tensor {
    x.upsample_bilinear2d(size, true, None, None)
}

/// Doubles height and width, bilinear with `align_corners = true` (the reference's `up2`).
pub fn up2(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    resize_aligned(x, [2 * h, 2 * w])
}

fn bn(p: &nn::Path, dim: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        momentum: 0.1,
        eps: 1e-5,
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, dim, cfg)
}

/// A convolution followed by BatchNorm unless it is a "first layer": the reference's
/// `cnn_block` (`DownBlock`) and `tcnn_block` (`UpBlock`). Variables: `0.weight`, `0.bias`,
/// `1.{weight,bias,running_mean,running_var}` with BatchNorm, or `weight`, `bias` without.
#[derive(Debug)]
pub struct ConvBn<C> {
    conv: C,
    bn: Option<nn::BatchNorm>,
}

/// Reference `cnn_block`: a 4x4 stride-2 convolution (padding 1) [+ BatchNorm].
pub type DownBlock = ConvBn<nn::Conv2D>;
/// Reference `tcnn_block`: a 4x4 stride-2 transposed convolution (padding 1) [+ BatchNorm].
pub type UpBlock = ConvBn<nn::ConvTranspose2D>;

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

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv);
        match &self.bn {
            Some(bn) => y.apply_t(bn, train),
            None => y,
        }
    }
}

impl ConvBn<nn::Conv2D> {
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, with_bn: bool) -> Self {
        let cfg = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Self::build(p, c_out, with_bn, |q| nn::conv2d(q, c_in, c_out, 4, cfg))
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
            nn::conv_transpose2d(q, c_in, c_out, 4, cfg)
        })
    }
}

/// Reference `general_conv2d_prenorm`: per-image normalisation, LeakyReLU(0.2), then a
/// convolution (3x3 with padding 1, or 1x1). Variables: `conv.weight`, `conv.bias`.
#[derive(Debug)]
pub struct PreNormConv {
    conv: nn::Conv2D,
}

impl PreNormConv {
    /// A 3x3 convolution; `reflect` selects reflect padding instead of zeros.
    pub fn k3(p: &nn::Path, c_in: i64, c_out: i64, reflect: bool) -> Self {
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
            conv: nn::conv2d(p / "conv", c_in, c_out, 3, cfg),
        }
    }

    /// A 1x1 convolution.
    pub fn k1(p: &nn::Path, c_in: i64, c_out: i64) -> Self {
        PreNormConv {
            conv: nn::conv2d(p / "conv", c_in, c_out, 1, Default::default()),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        leaky(&image_norm(x)).apply(&self.conv)
    }
}

/// Reference `fusion_prenorm_2d`: pre-norm 1x1 (M·C to C), 3x3 and 1x1 convolutions that fuse the
/// channel-concatenated features of M modality slots. Variables: `fusion_layer.{0,1,2}.conv.*`.
#[derive(Debug)]
pub struct FusionConv {
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
}

/// A linear layer whose variables are `weight` and `bias` (PyTorch layout).
pub fn linear(p: &nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    nn::linear(p, c_in, c_out, Default::default())
}
