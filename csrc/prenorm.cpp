// The front of DIS2's pre-norm convolutions (`general_conv2d_prenorm`) as one autograd op:
// per-image normalisation over (C, H, W) without affine parameters, LeakyReLU, and optionally the
// one-pixel reflect padding of the 3x3 convolution that follows.
//
// As separate PyTorch ops this takes group_norm, leaky_relu and reflection_pad2d forward and three
// backward kernels, each a full pass over memory, plus their intermediate tensors. Here the
// forward reads the input twice (statistics, then output) and writes the padded output once; the
// backward reads the incoming gradient and the input twice and writes the input gradient once,
// folding the padding's gradient back row by row in a small buffer. Only the input and two
// numbers per image are kept for the backward.
//
// Layout: an image is P planes of H rows of W pixels of E contiguous elements: channels-last
// tensors have P = 1 and E = C, contiguous NCHW tensors P = C and E = 1. The output (and the input
// gradient) keep the input's layout.
//
// Sums are taken per row in float (vectorised: `#pragma omp simd` lets the compiler reorder them)
// and merged per image in double (Chan's formulas), in a fixed
// order that does not depend on the number of threads: the same input gives the same output.
//
// Float32 and bfloat16 tensors (a bf16 forward's activations): bfloat16 values are widened to
// float32 as they are read, every sum and product is float32 as for float32 inputs, and only the
// output (and the input gradient) is rounded to bfloat16, to nearest even.
#include "common.h"

#include <torch/csrc/autograd/custom_function.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// The row loops in AVX-512 (x86-64-v4) and AVX2 versions besides the baseline x86-64 one, picked
// at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DIS2_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DIS2_HOT
#endif

namespace {

// Storage types: float, or the bits of a bfloat16 (`uint16_t`, so that the conversions are plain
// integer arithmetic the compiler vectorises).
using bf16 = uint16_t;

inline float widen(float v) { return v; }
inline float widen(bf16 v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Rounds to the storage type: to nearest, ties to even, for bfloat16 (NaN stays NaN).
template <typename T> inline T narrow(float v);
template <> inline float narrow<float>(float v) { return v; }
template <> inline bf16 narrow<bf16>(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return v != v ? static_cast<bf16>(0x7FC0u) : static_cast<bf16>(rounded);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Where the elements of one image lie.
struct Geometry {
  int64_t n, planes, h, w, e;
  bool channels_last;

  int64_t row_len() const { return w * e; }
  int64_t rows() const { return planes * h; }
  int64_t image_len() const { return planes * h * w * e; }
  int64_t padded_row_len() const { return (w + 2) * e; }
  int64_t padded_image_len() const { return planes * (h + 2) * (w + 2) * e; }
};

Geometry geometry(const at::Tensor &x) {
  auto s = x.sizes();
  bool cl = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  if (cl) return {s[0], 1, s[2], s[3], s[1], true};
  return {s[0], s[1], s[2], s[3], 1, false};
}

// Rows are split into this many chunks per image at most: units of parallel work whose partial
// sums are merged in order.
constexpr int64_t kChunksPerImage = 16;

int64_t chunks_per_image(const Geometry &g) { return std::min(kChunksPerImage, g.rows()); }

// Count, mean and sum of squared deviations of a set of values; `merge` is Chan's formula.
struct Moments {
  double count = 0, mean = 0, m2 = 0;
  void merge(const Moments &o) {
    if (o.count == 0) return;
    double total = count + o.count;
    double delta = o.mean - mean;
    mean += delta * o.count / total;
    m2 += o.m2 + delta * delta * count * o.count / total;
    count = total;
  }
};

template <typename T> inline Moments row_moments_of(const T *__restrict x, int64_t len) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < len; ++i) sum += widen(x[i]);
  float mean = sum / len;
  float m2 = 0;
#pragma omp simd reduction(+ : m2)
  for (int64_t i = 0; i < len; ++i) {
    float d = widen(x[i]) - mean;
    m2 += d * d;
  }
  return {static_cast<double>(len), mean, m2};
}
DIS2_HOT Moments row_moments(const float *x, int64_t len) { return row_moments_of(x, len); }
DIS2_HOT Moments row_moments(const bf16 *x, int64_t len) { return row_moments_of(x, len); }

// `out[i] = leaky((x[i] - mean) * rstd)`.
template <typename T>
inline void normalise_row_of(const T *__restrict x, T *__restrict out, int64_t len, float mean,
                             float rstd, float slope) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    float z = (widen(x[i]) - mean) * rstd;
    // Branch-free LeakyReLU, exact: z + slope·0 for z > 0, 0 + slope·z otherwise.
    out[i] = narrow<T>(std::max(z, 0.0f) + slope * std::min(z, 0.0f));
  }
}
DIS2_HOT void normalise_row(const float *x, float *out, int64_t len, float mean, float rstd,
                            float slope) {
  normalise_row_of(x, out, len, mean, rstd, slope);
}
DIS2_HOT void normalise_row(const bf16 *x, bf16 *out, int64_t len, float mean, float rstd,
                            float slope) {
  normalise_row_of(x, out, len, mean, rstd, slope);
}

// `normalise_row` over the `w` pixels of a row joined per pixel from two sources: `a` (`ea`
// elements a pixel) then `b` (`eb`), into `out` (`ea + eb` a pixel).
template <typename T>
inline void normalise_joined_row_of(const T *__restrict a, int64_t ea, const T *__restrict b,
                                    int64_t eb, T *__restrict out, int64_t w, float mean,
                                    float rstd, float slope) {
  for (int64_t x = 0; x < w; ++x) {
    normalise_row_of(a + x * ea, out + x * (ea + eb), ea, mean, rstd, slope);
    normalise_row_of(b + x * eb, out + x * (ea + eb) + ea, eb, mean, rstd, slope);
  }
}
DIS2_HOT void normalise_joined_row(const float *a, int64_t ea, const float *b, int64_t eb,
                                   float *out, int64_t w, float mean, float rstd, float slope) {
  normalise_joined_row_of(a, ea, b, eb, out, w, mean, rstd, slope);
}
DIS2_HOT void normalise_joined_row(const bf16 *a, int64_t ea, const bf16 *b, int64_t eb,
                                   bf16 *out, int64_t w, float mean, float rstd, float slope) {
  normalise_joined_row_of(a, ea, b, eb, out, w, mean, rstd, slope);
}

// Runs `f(image, first_row, end_row, unit)` over every chunk of rows of every image.
template <typename F> void for_each_chunk(const Geometry &g, F f) {
  int64_t chunks = chunks_per_image(g);
  int64_t per_chunk = (g.rows() + chunks - 1) / chunks;
  at::parallel_for(0, g.n * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      int64_t image = unit / chunks, chunk = unit % chunks;
      int64_t first = chunk * per_chunk, last = std::min(g.rows(), first + per_chunk);
      if (first < last) f(image, first, last, unit);
    }
  });
}

// The elements of `t` as storage type T (float32 or bfloat16 bits).
template <typename T> const T *elements(const at::Tensor &t) {
  return static_cast<const T *>(t.const_data_ptr());
}
template <typename T> T *mutable_elements(at::Tensor &t) {
  return static_cast<T *>(t.mutable_data_ptr());
}

// Per-image moments of all elements, merged in a fixed order (not depending on the threads).
template <typename T> std::vector<Moments> image_moments(const at::Tensor &x, const Geometry &g) {
  int64_t chunks = chunks_per_image(g);
  std::vector<Moments> partial(g.n * chunks);
  const T *data = elements<T>(x);
  for_each_chunk(g, [&](int64_t image, int64_t first, int64_t last, int64_t unit) {
    Moments m;
    for (int64_t r = first; r < last; ++r) {
      m.merge(row_moments(data + image * g.image_len() + r * g.row_len(), g.row_len()));
    }
    partial[unit] = m;
  });
  std::vector<Moments> images(g.n);
  for (int64_t i = 0; i < g.n; ++i) {
    for (int64_t c = 0; c < chunks; ++c) images[i].merge(partial[i * chunks + c]);
  }
  return images;
}

// Mean and 1/sqrt(var + eps) (biased variance) of each image's moments, as float tensors [N].
std::pair<at::Tensor, at::Tensor> stats_of(const std::vector<Moments> &images, double eps,
                                           const at::TensorOptions &options) {
  int64_t n = static_cast<int64_t>(images.size());
  auto mean = at::empty({n}, options.dtype(at::kFloat));
  auto rstd = at::empty({n}, options.dtype(at::kFloat));
  float *mean_p = mean.data_ptr<float>(), *rstd_p = rstd.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    mean_p[i] = static_cast<float>(images[i].mean);
    rstd_p[i] = static_cast<float>(1.0 / std::sqrt(images[i].m2 / images[i].count + eps));
  }
  return {mean, rstd};
}

// Per-image mean and 1/sqrt(var + eps) (biased variance), as float tensors [N].
template <typename T>
std::pair<at::Tensor, at::Tensor> image_stats(const at::Tensor &x, const Geometry &g, double eps) {
  return stats_of(image_moments<T>(x, g), eps, x.options());
}

// Completes the reflect padding around padded row y + 1 of a plane (`plane_out`, its padded
// rows), whose pixels 1..w are written: its left and right border pixels, and the top or bottom
// border row when y is row 1 or row h - 2.
template <typename T> void reflect_borders(T *plane_out, int64_t y, const Geometry &g) {
  const int64_t e = g.e, w = g.w, h = g.h, prl = g.padded_row_len();
  T *own = plane_out + (y + 1) * prl;
  std::copy(own + 2 * e, own + 3 * e, own);                       // left: pixel 1
  std::copy(own + (w - 1) * e, own + w * e, own + (w + 1) * e);  // right: pixel w - 2
  if (y == 1) std::copy(own, own + prl, plane_out);
  if (y == h - 2) std::copy(own, own + prl, plane_out + (h + 1) * prl);
}

template <typename T>
at::Tensor forward_kernel(const at::Tensor &x, const Geometry &g, const at::Tensor &mean,
                          const at::Tensor &rstd, float slope, bool pad) {
  auto sizes = x.sizes().vec();
  if (pad) {
    sizes[2] += 2;
    sizes[3] += 2;
  }
  auto format = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto out = at::empty(sizes, x.options().memory_format(format));
  const T *in = elements<T>(x);
  T *o = mutable_elements<T>(out);
  const float *mean_p = mean.const_data_ptr<float>(), *rstd_p = rstd.const_data_ptr<float>();
  for_each_chunk(g, [&](int64_t image, int64_t first, int64_t last, int64_t) {
    float mu = mean_p[image], r = rstd_p[image];
    const T *src = in + image * g.image_len();
    if (!pad) {
      T *dst = o + image * g.image_len();
      normalise_row(src + first * g.row_len(), dst + first * g.row_len(),
                    (last - first) * g.row_len(), mu, r, slope);
      return;
    }
    T *dst = o + image * g.padded_image_len();
    const int64_t e = g.e, w = g.w, h = g.h, prl = g.padded_row_len();
    for (int64_t row = first; row < last; ++row) {
      int64_t plane = row / h, y = row % h;
      T *plane_out = dst + plane * (h + 2) * prl;
      T *own = plane_out + (y + 1) * prl;
      normalise_row(src + row * g.row_len(), own + e, w * e, mu, r, slope);
      reflect_borders(plane_out, y, g);
    }
  });
  return out;
}

// leaky(normalise(x)) of x = cat([skip[i / k], own[i]], channels) per image i of `own`,
// reflect-padded by one pixel when `pad`, without writing x out: `skip` [N, Cs, H, W] and `own`
// [N·k, Co, H, W] channels-last, the output [N·k, Cs + Co, H (+2), W (+2)] channels-last. The
// skip's moments are taken once per image of `skip`, then merged with each own image's.
template <typename T>
at::Tensor joined_forward(const at::Tensor &skip, const at::Tensor &own, int64_t k, double eps,
                          float slope, bool pad) {
  auto s = skip.sizes(), o = own.sizes();
  Geometry gs{s[0], 1, s[2], s[3], s[1], true}, go{o[0], 1, o[2], o[3], o[1], true};
  auto skip_m = image_moments<T>(skip, gs);
  auto own_m = image_moments<T>(own, go);
  std::vector<Moments> joined(go.n);
  for (int64_t i = 0; i < go.n; ++i) {
    joined[i] = skip_m[i / k];
    joined[i].merge(own_m[i]);
  }
  auto [mean, rstd] = stats_of(joined, eps, own.options());
  const float *mean_p = mean.const_data_ptr<float>(), *rstd_p = rstd.const_data_ptr<float>();
  Geometry g{go.n, 1, go.h, go.w, gs.e + go.e, true};
  const int64_t p = pad ? 1 : 0;
  const int64_t out_row = pad ? g.padded_row_len() : g.row_len();
  const int64_t out_image = pad ? g.padded_image_len() : g.image_len();
  auto out = at::empty({g.n, g.e, g.h + 2 * p, g.w + 2 * p},
                       own.options().memory_format(at::MemoryFormat::ChannelsLast));
  const T *skip_in = elements<T>(skip), *own_in = elements<T>(own);
  T *o_out = mutable_elements<T>(out);
  for_each_chunk(g, [&](int64_t image, int64_t first, int64_t last, int64_t) {
    T *dst = o_out + image * out_image;
    for (int64_t y = first; y < last; ++y) {
      normalise_joined_row(skip_in + ((image / k) * gs.h + y) * gs.row_len(), gs.e,
                           own_in + (image * go.h + y) * go.row_len(), go.e,
                           dst + (y + p) * out_row + p * g.e, g.w, mean_p[image], rstd_p[image],
                           slope);
      if (pad) reflect_borders(dst, y, g);
    }
  });
  return out;
}

// The gradient of row `row` of the unpadded image, folded from the padded gradient `gy` (the
// image's block) into `buf` (`w * e` floats).
template <typename T> void fold_row(const T *gy, const Geometry &g, int64_t row, float *buf) {
  const int64_t e = g.e, w = g.w, h = g.h, prl = g.padded_row_len();
  int64_t plane = row / h, y = row % h;
  const T *plane_g = gy + plane * (h + 2) * prl;
  auto add_padded_row = [&](int64_t padded, bool first) {
    const T *src = plane_g + padded * prl;
    if (first) {
      for (int64_t i = 0; i < w * e; ++i) buf[i] = widen(src[e + i]);
    } else {
      for (int64_t i = 0; i < w * e; ++i) buf[i] += widen(src[e + i]);
    }
    for (int64_t i = 0; i < e; ++i) {
      buf[e + i] += widen(src[i]);                          // padded pixel 0 is pixel 1
      buf[(w - 2) * e + i] += widen(src[(w + 1) * e + i]);  // padded pixel w + 1 is pixel w - 2
    }
  };
  add_padded_row(y + 1, true);
  if (y == 1) add_padded_row(0, false);
  if (y == h - 2) add_padded_row(h + 1, false);
}

// Sums of gz and gz·z over a row, gz being the gradient before the LeakyReLU.
template <typename T>
inline std::pair<float, float> backward_row_sums_of(const T *__restrict x,
                                                    const float *__restrict gy, int64_t len,
                                                    float mean, float rstd, float slope) {
  float s = 0, sz = 0;
#pragma omp simd reduction(+ : s, sz)
  for (int64_t i = 0; i < len; ++i) {
    float z = (widen(x[i]) - mean) * rstd;
    float g = gy[i];
    float gz = z > 0 ? g : g * slope;
    s += gz;
    sz += gz * z;
  }
  return {s, sz};
}
DIS2_HOT std::pair<float, float> backward_row_sums(const float *x, const float *gy, int64_t len,
                                                   float mean, float rstd, float slope) {
  return backward_row_sums_of(x, gy, len, mean, rstd, slope);
}
DIS2_HOT std::pair<float, float> backward_row_sums(const bf16 *x, const float *gy, int64_t len,
                                                   float mean, float rstd, float slope) {
  return backward_row_sums_of(x, gy, len, mean, rstd, slope);
}

// `gx = rstd · (gz - mean(gz) - z · mean(gz·z))`.
template <typename T>
inline void backward_row_of(const T *__restrict x, const float *__restrict gy, T *__restrict gx,
                            int64_t len, float mean, float rstd, float slope, float mean_gz,
                            float mean_gzz) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    float z = (widen(x[i]) - mean) * rstd;
    float g = gy[i];
    float gz = z > 0 ? g : g * slope;
    gx[i] = narrow<T>(rstd * (gz - mean_gz - z * mean_gzz));
  }
}
DIS2_HOT void backward_row(const float *x, const float *gy, float *gx, int64_t len, float mean,
                           float rstd, float slope, float mean_gz, float mean_gzz) {
  backward_row_of(x, gy, gx, len, mean, rstd, slope, mean_gz, mean_gzz);
}
DIS2_HOT void backward_row(const bf16 *x, const float *gy, bf16 *gx, int64_t len, float mean,
                           float rstd, float slope, float mean_gz, float mean_gzz) {
  backward_row_of(x, gy, gx, len, mean, rstd, slope, mean_gz, mean_gzz);
}

// A row of bfloat16 gradient widened into `buf`; a float32 row is read in place.
inline const float *row_as_float(const float *row, int64_t, float *) { return row; }
inline const float *row_as_float(const bf16 *row, int64_t len, float *buf) {
  for (int64_t i = 0; i < len; ++i) buf[i] = widen(row[i]);
  return buf;
}

template <typename T>
at::Tensor backward_kernel(const at::Tensor &x, const at::Tensor &grad, const Geometry &g,
                           const at::Tensor &mean, const at::Tensor &rstd, float slope, bool pad) {
  auto format = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto gy = grad.to(x.scalar_type()).contiguous(format);
  auto gx = at::empty(x.sizes(), x.options().memory_format(format));
  const T *in = elements<T>(x), *gp = elements<T>(gy);
  T *out = mutable_elements<T>(gx);
  const float *mean_p = mean.const_data_ptr<float>(), *rstd_p = rstd.const_data_ptr<float>();
  const int64_t len = g.row_len();
  const int64_t grad_image_len = pad ? g.padded_image_len() : g.image_len();
  // The incoming gradient of one row as float32: folded from the padding into a buffer, widened
  // into it (bfloat16), or read in place (float32).
  auto row_grad = [&](int64_t image, int64_t row, std::vector<float> &buf) -> const float * {
    const T *image_g = gp + image * grad_image_len;
    if (!pad) return row_as_float(image_g + row * len, len, buf.data());
    fold_row(image_g, g, row, buf.data());
    return buf.data();
  };
  const bool needs_buffer = pad || !std::is_same_v<T, float>;
  int64_t chunks = chunks_per_image(g);
  std::vector<double> sum_gz(g.n * chunks, 0.0), sum_gzz(g.n * chunks, 0.0);
  for_each_chunk(g, [&](int64_t image, int64_t first, int64_t last, int64_t unit) {
    std::vector<float> buf(needs_buffer ? len : 0);
    double s = 0, sz = 0;
    for (int64_t row = first; row < last; ++row) {
      auto [a, b] = backward_row_sums(in + image * g.image_len() + row * len,
                                      row_grad(image, row, buf), len, mean_p[image],
                                      rstd_p[image], slope);
      s += a;
      sz += b;
    }
    sum_gz[unit] = s;
    sum_gzz[unit] = sz;
  });
  std::vector<float> mean_gz(g.n), mean_gzz(g.n);
  for (int64_t i = 0; i < g.n; ++i) {
    double s = 0, sz = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      s += sum_gz[i * chunks + c];
      sz += sum_gzz[i * chunks + c];
    }
    mean_gz[i] = static_cast<float>(s / g.image_len());
    mean_gzz[i] = static_cast<float>(sz / g.image_len());
  }
  for_each_chunk(g, [&](int64_t image, int64_t first, int64_t last, int64_t) {
    std::vector<float> buf(needs_buffer ? len : 0);
    for (int64_t row = first; row < last; ++row) {
      int64_t offset = image * g.image_len() + row * len;
      backward_row(in + offset, row_grad(image, row, buf), out + offset, len, mean_p[image],
                   rstd_p[image], slope, mean_gz[image], mean_gzz[image]);
    }
  });
  return gx;
}

struct PreNormLeaky : public torch::autograd::Function<PreNormLeaky> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &input, double slope,
                            double eps, bool pad) {
    bool bf16_input = input.scalar_type() == at::kBFloat16;
    TORCH_CHECK(input.dim() == 4 && (input.scalar_type() == at::kFloat || bf16_input) &&
                    input.is_cpu(),
                "prenorm_leaky: expected a float32 or bfloat16 CPU tensor [N, C, H, W], got ",
                input.sizes(), " ", input.scalar_type(), " on ", input.device());
    TORCH_CHECK(!pad || (input.size(2) >= 2 && input.size(3) >= 2),
                "prenorm_leaky: reflect padding needs at least 2x2 pixels, got ", input.sizes());
    auto x = input.contiguous(input.suggest_memory_format());
    Geometry g = geometry(x);
    auto [mean, rstd] = bf16_input ? image_stats<bf16>(x, g, eps) : image_stats<float>(x, g, eps);
    auto out = bf16_input ? forward_kernel<bf16>(x, g, mean, rstd, static_cast<float>(slope), pad)
                          : forward_kernel<float>(x, g, mean, rstd, static_cast<float>(slope), pad);
    ctx->save_for_backward({x, mean, rstd});
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["pad"] = pad;
    return out;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0];
    float slope = static_cast<float>(ctx->saved_data["slope"].toDouble());
    bool pad = ctx->saved_data["pad"].toBool();
    auto gx = x.scalar_type() == at::kBFloat16
                  ? backward_kernel<bf16>(x, grads[0], geometry(x), saved[1], saved[2], slope, pad)
                  : backward_kernel<float>(x, grads[0], geometry(x), saved[1], saved[2], slope, pad);
    return {gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor prenorm_leaky_joined(const at::Tensor &skip, const at::Tensor &own, int64_t k,
                                double slope, double eps, bool pad) {
  bool bf16_input = skip.scalar_type() == at::kBFloat16;
  TORCH_CHECK(skip.dim() == 4 && own.dim() == 4 && skip.is_cpu() && own.is_cpu() &&
                  (skip.scalar_type() == at::kFloat || bf16_input) &&
                  own.scalar_type() == skip.scalar_type(),
              "prenorm_leaky_joined: expected float32 or bfloat16 CPU tensors [N, Cs, H, W] and "
              "[N·k, Co, H, W] of one kind, got ",
              skip.sizes(), " ", skip.scalar_type(), " on ", skip.device(), " and ", own.sizes(),
              " ", own.scalar_type(), " on ", own.device());
  TORCH_CHECK(k > 0 && own.size(0) == skip.size(0) * k && own.size(2) == skip.size(2) &&
                  own.size(3) == skip.size(3),
              "prenorm_leaky_joined: ", own.sizes(), " is not ", k, " images per image of ",
              skip.sizes());
  TORCH_CHECK(!pad || (own.size(2) >= 2 && own.size(3) >= 2),
              "prenorm_leaky_joined: reflect padding needs at least 2x2 pixels, got ", own.sizes());
  TORCH_CHECK(!skip.requires_grad() && !own.requires_grad(),
              "prenorm_leaky_joined: inference only (no backward); the inputs require gradients");
  auto cl = at::MemoryFormat::ChannelsLast;
  auto s = skip.contiguous(cl), o = own.contiguous(cl);
  return bf16_input ? joined_forward<bf16>(s, o, k, eps, static_cast<float>(slope), pad)
                    : joined_forward<float>(s, o, k, eps, static_cast<float>(slope), pad);
}

}  // namespace

extern "C" {

// leaky(normalise(x)) per image, reflect-padded by one pixel when `pad`; autograd-aware.
void *dis2_prenorm_leaky(void *x, double slope, double eps, bool pad, char **error) {
  return dis2::new_tensor_or_error(
      error, [&] { return PreNormLeaky::apply(dis2::tensor(x), slope, eps, pad); });
}

// leaky(normalise(cat([skip[i / k], own[i]]))) per image i of `own`, reflect-padded by one pixel
// when `pad`, without the concatenation; inference only.
void *dis2_prenorm_leaky_joined(void *skip, void *own, int64_t k, double slope, double eps,
                                bool pad, char **error) {
  return dis2::new_tensor_or_error(error, [&] {
    return prenorm_leaky_joined(dis2::tensor(skip), dis2::tensor(own), k, slope, eps, pad);
  });
}
}
