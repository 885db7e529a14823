// The segmentation losses (weighted cross-entropy + Dice, `model::losses::seg_losses_weighted`) of
// N predictions against one target (one-hot, or any values) as one autograd op on float32 CPU
// tensors.
//
// Per prediction n (sums over images b, classes k, pixels i; w[b,k] the cross-entropy weights):
//   WCE_n  = -(1/(B·K·HW)) Σ_{b,k} w[b,k] Σ_i t·log(max(p, 0.005))
//   I[n,k] = Σ_{b,i} p·t,  C[n,k] = Σ_{b,i} p + Σ_{b,i} t + 1e-7
//   loss_n = WCE_n + 1 - (1/K) Σ_k 2·I[n,k]/C[n,k]
// and the backward pass, with g_n the incoming gradient of loss_n,
//   dL/dp = g_n·(-(w[b,k]/(B·K·HW))·t/p·[p >= 0.005] - (2/K)·t/C[n,k] + (2/K)·I[n,k]/C[n,k]²).
// Probabilities never exceed 1, so the reference's clamp to [0.005, 1] is a clamp from below
// (same values and gradients); its gradient passes where p >= 0.005, as PyTorch's does.
//
// The forward pass reads every prediction once and the backward pass reads it once more and
// writes its gradient directly, instead of stacking the predictions into one big copy and
// running a dozen full-size tensor ops over it. Predictions and the target may be stored
// contiguously (NCHW) or channels-last (the network's outputs are); both are read in memory
// order without copies, and their gradients have their layout (a prediction in neither layout
// is read from a contiguous copy and gets a contiguous gradient).
//
// Deterministic whatever the thread count: the work is split into fixed units, one per
// (prediction, image); each unit sums serially (in double, over fixed lanes) into its own partial
// sums, and the partials are combined in a fixed order after the parallel loop.
//
// The logarithms would cost most: they are Cephes' `logf` in plain arithmetic (vectorised), and
// with a target of zeros and ones each is the logarithm of a product of 16 probabilities (see
// `run_sums`).
#include "common.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

// The hot loops in an AVX2 version besides the baseline x86-64 one, picked at load time (about
// twice as fast as the baseline's SSE2 on the bench's sizes); the same operations in the same
// order, so the same results.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DIS2_HOT __attribute__((target_clones("avx2", "default")))
#else
#define DIS2_HOT
#endif

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr float kClampMin = 0.005f;
constexpr double kDiceEps = 1e-7;

// A dense float32 tensor [B, K, H, W], read through its memory layout rather than its strides
// (which are arbitrary along dimensions of size 1).
struct Dense {
  at::Tensor tensor;   // keeps a copy alive when the input was neither layout
  bool channels_last;  // memory order [B, H, W, K] rather than [B, K, H, W]
};

Dense dense(const at::Tensor &t) {
  if (t.is_contiguous()) return {t, false};
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return {t, true};
  return {t.contiguous(), false};
}

// The target in the two layouts, each made (at most one copy) when a prediction needs it.
struct Targets {
  explicit Targets(const at::Tensor &target) : target(target) {}
  const float *in(bool channels_last) {
    at::Tensor &slot = channels_last ? nhwc : nchw;
    if (!slot.defined()) {
      slot = target.contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                             : at::MemoryFormat::Contiguous);
    }
    return slot.data_ptr<float>();
  }
  at::Tensor target, nchw, nhwc;
};

// How the K·HW elements of one image are walked in memory order: `rows` runs of `len` elements
// each; element j of a run has class `row + j % period` (NCHW: K runs of HW, period 1;
// channels-last: one run of HW·K, period K).
struct Walk {
  int64_t rows, len, period;
};

Walk walk(bool channels_last, int64_t k, int64_t hw) {
  return channels_last ? Walk{1, hw * k, k} : Walk{k, hw, 1};
}

// Lanes of a run: a multiple of the period (so that lane l always holds class l % period) and of
// the chunk width kChunk, about 32 or more. The runs are walked in chunks of kChunk consecutive
// elements, a fixed-width loop that GCC turns into vector instructions without scalar remainders;
// element j of a run goes to lane j % lanes.
constexpr int64_t kChunk = 8;

int64_t lanes(int64_t period) {
  const int64_t l = std::lcm(period, kChunk);
  return l * std::max<int64_t>(1, 32 / l);
}

// log(x) for positive normal floats (NaN stays NaN): Cephes' `logf` (peak relative error about
// 1e-7, as libm's), in plain arithmetic so that GCC vectorises the loop that calls it, instead
// of a scalar libm call per element.
inline float log_positive(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int32_t e = static_cast<int32_t>(bits >> 23) - 126;  // x = m·2^e, m in [0.5, 1)
  bits = (bits & 0x007fffffu) | 0x3f000000u;
  float m;
  std::memcpy(&m, &bits, sizeof m);
  const bool low = m < 0.70710678118654752f;  // then x = (2m)·2^(e-1), 2m in [√½·2, 2)
  e -= low ? 1 : 0;
  m = (low ? m + m : m) - 1.0f;
  const float fe = static_cast<float>(e);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  float r = m + y;
  r += 0.693359375f * fe;
  return x == x ? r : x;
}

// One element's terms of Σp, Σp·t and Σt, added to its lane's accumulators.
inline void accumulate(float pv, float tv, double &sp, double &si, double &st) {
  sp += static_cast<double>(pv);
  si += static_cast<double>(pv) * static_cast<double>(tv);
  st += static_cast<double>(tv);
}

// max(p, 0.005), NaN staying NaN as with PyTorch's clamp.
inline float clamped(float pv) { return pv < kClampMin ? kClampMin : pv; }

// Blocks of lanes whose factors a lane multiplies before taking their logarithm (see `run_sums`):
// 16 factors in [0.005, 1] multiply to at least 0.005^16 ≈ 1.5e-37, still a normal float.
constexpr int64_t kProductBlocks = 16;

// Scratch of one thread's forward units: the lanes' double accumulators (4 per lane) and
// products (1 per lane).
struct SumScratch {
  void resize(int64_t lane_count) {
    acc.assign(4 * lane_count, 0.0);
    prod.assign(lane_count, 1.0f);
  }
  std::vector<double> acc;
  std::vector<float> prod;
};

// Forward partial sums of one run into `sums` (4 per class: Σp, Σp·t, Σt·log(max(p, 0.005)),
// Σt; `sums` points at the run's first class).
//
// The logarithms cost most. With a target of zeros and ones (`binary`, one-hot targets) each
// lane multiplies the clamped probabilities where t = 1 over kProductBlocks blocks and then
// adds the logarithm of the product: one logarithm per 16 elements, and the same sum up to
// float rounding (about 1e-7 relative, as the terms' own). Otherwise every element's
// t·log(max(p, 0.005)) is taken.
DIS2_HOT void run_sums(const float *__restrict__ p, const float *__restrict__ t, int64_t len,
                       int64_t period, bool binary, double *sums, SumScratch &scratch) {
  const int64_t lane_count = lanes(period);
  scratch.resize(lane_count);
  double *__restrict__ sp = scratch.acc.data();
  double *__restrict__ si = sp + lane_count;
  double *__restrict__ sl = si + lane_count;
  double *__restrict__ st = sl + lane_count;
  float *__restrict__ prod = scratch.prod.data();
  const int64_t full = len - len % lane_count;
  if (binary) {
    auto flush = [&] {
#pragma omp simd
      for (int64_t l = 0; l < lane_count; ++l) {
        sl[l] += static_cast<double>(log_positive(prod[l]));
        prod[l] = 1.0f;
      }
    };
    for (int64_t off = 0, lane = 0, blocks = 0; off < full; off += kChunk) {
#pragma omp simd
      for (int64_t v = 0; v < kChunk; ++v) {
        const int64_t l = lane + v;
        const float pv = p[off + v], tv = t[off + v];
        accumulate(pv, tv, sp[l], si[l], st[l]);
        prod[l] *= tv != 0.0f ? clamped(pv) : 1.0f;
      }
      lane += kChunk;
      if (lane == lane_count) {
        lane = 0;
        if (++blocks == kProductBlocks) {
          flush();
          blocks = 0;
        }
      }
    }
    flush();
  } else {
    for (int64_t off = 0, lane = 0; off < full; off += kChunk) {
#pragma omp simd
      for (int64_t v = 0; v < kChunk; ++v) {
        const int64_t l = lane + v;
        const float pv = p[off + v], tv = t[off + v];
        accumulate(pv, tv, sp[l], si[l], st[l]);
        sl[l] += static_cast<double>(tv * log_positive(clamped(pv)));
      }
      lane += kChunk;
      if (lane == lane_count) lane = 0;
    }
  }
  for (int64_t j = full; j < len; ++j) {
    const int64_t l = j - full;
    accumulate(p[j], t[j], sp[l], si[l], st[l]);
    sl[l] += static_cast<double>(t[j] * log_positive(clamped(p[j])));
  }
  for (int64_t j = 0; j < lane_count; ++j) {
    double *s = sums + 4 * (j % period);
    s[0] += sp[j];
    s[1] += si[j];
    s[2] += sl[j];
    s[3] += st[j];
  }
}

// One element's gradient: c0 + t·c1 + [p >= 0.005]·a·t/p.
inline float gradient(float pv, float tv, float c0, float c1, float ca) {
  // Divides by the clamped p, so that the division is safe to do for every lane.
  const float q = ca * tv / std::max(pv, kClampMin);
  return c0 + tv * c1 + (pv >= kClampMin ? q : 0.0f);
}

// The gradient of one run; `coef` holds 3 floats per class of the run (c0, c1, a, see
// `gradient`). `exp` is scratch for 3·lanes floats.
DIS2_HOT void run_grad(const float *__restrict__ p, const float *__restrict__ t,
                       float *__restrict__ g, int64_t len, int64_t period, const float *coef,
                       std::vector<float> &exp) {
  const int64_t lane_count = lanes(period);
  float *__restrict__ c0 = exp.data();
  float *__restrict__ c1 = c0 + lane_count;
  float *__restrict__ ca = c1 + lane_count;
  for (int64_t j = 0; j < lane_count; ++j) {
    const float *c = coef + 3 * (j % period);
    c0[j] = c[0];
    c1[j] = c[1];
    ca[j] = c[2];
  }
  const int64_t full = len - len % lane_count;
  for (int64_t off = 0, lane = 0; off < full; off += kChunk) {
#pragma omp simd
    for (int64_t v = 0; v < kChunk; ++v) {
      const int64_t l = lane + v;
      g[off + v] = gradient(p[off + v], t[off + v], c0[l], c1[l], ca[l]);
    }
    lane += kChunk;
    if (lane == lane_count) lane = 0;
  }
  for (int64_t j = full; j < len; ++j) {
    const int64_t l = j - full;
    g[j] = gradient(p[j], t[j], c0[l], c1[l], ca[l]);
  }
}

struct SegLosses : public torch::autograd::Function<SegLosses> {
  // preds: N tensors [B, K, H, W]; target: [B, K, H, W]; weights: [B, K] cross-entropy weights.
  // Returns the N losses [N]; only the predictions get gradients.
  static at::Tensor forward(AutogradContext *ctx, at::TensorList preds, const at::Tensor &target,
                            const at::Tensor &weights) {
    const int64_t n = static_cast<int64_t>(preds.size());
    TORCH_CHECK(n > 0, "seg_losses: no predictions");
    TORCH_CHECK(target.dim() == 4, "seg_losses: target must be [B, K, H, W], got ",
                target.sizes());
    TORCH_CHECK(target.device().is_cpu() && target.scalar_type() == at::kFloat,
                "seg_losses: target must be float32 on the CPU");
    for (const auto &p : preds) {
      TORCH_CHECK(p.sizes() == target.sizes(), "seg_losses: prediction ", p.sizes(),
                  " against target ", target.sizes());
      TORCH_CHECK(p.device().is_cpu() && p.scalar_type() == at::kFloat,
                  "seg_losses: predictions must be float32 on the CPU");
    }
    const int64_t b = target.size(0), k = target.size(1), hw = target.size(2) * target.size(3);
    TORCH_CHECK(weights.sizes() == at::IntArrayRef({b, k}), "seg_losses: weights must be [", b,
                ", ", k, "], got ", weights.sizes());
    const at::Tensor w = weights.to(at::kDouble).contiguous();

    std::vector<Dense> p;
    p.reserve(n);
    for (const auto &pred : preds) p.push_back(dense(pred));
    Targets targets(target);
    std::vector<const float *> t(n);
    for (int64_t i = 0; i < n; ++i) t[i] = targets.in(p[i].channels_last);

    // Is the target all zeros and ones (as one-hot targets are)?
    const float *tt = t[0];
    int64_t others = 0;
    for (int64_t j = 0, size = b * k * hw; j < size; ++j) {
      others += (tt[j] != 0.0f) & (tt[j] != 1.0f);
    }
    const bool binary = others == 0;

    // Unit u = (prediction u / B, image u % B) fills partial[u] with 4 sums per class.
    std::vector<double> partial(n * b * k * 4, 0.0);
    at::parallel_for(0, n * b, 1, [&](int64_t begin, int64_t end) {
      SumScratch scratch;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t pi = u / b, bi = u % b;
        const Walk wk = walk(p[pi].channels_last, k, hw);
        const float *pd = p[pi].tensor.data_ptr<float>() + bi * k * hw;
        const float *td = t[pi] + bi * k * hw;
        for (int64_t r = 0; r < wk.rows; ++r) {
          run_sums(pd + r * wk.len, td + r * wk.len, wk.len, wk.period, binary,
                   partial.data() + (u * k + r) * 4, scratch);
        }
      }
    });

    // Combine in a fixed order: images, then classes.
    const double *wd = w.data_ptr<double>();
    const double scale = 1.0 / static_cast<double>(b * k * hw);
    std::vector<double> t_sum(k, 0.0);  // Σ_{b,i} t per class, from the first prediction's units
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t c = 0; c < k; ++c) t_sum[c] += partial[(bi * k + c) * 4 + 3];
    }
    at::Tensor inter = at::empty({n, k}, at::kDouble), card = at::empty({n, k}, at::kDouble);
    at::Tensor losses = at::empty({n}, target.options());
    double *id = inter.data_ptr<double>(), *cd = card.data_ptr<double>();
    float *ld = losses.data_ptr<float>();
    for (int64_t pi = 0; pi < n; ++pi) {
      double wce = 0.0, dice = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        double sum_i = 0.0, sum_p = 0.0;
        for (int64_t bi = 0; bi < b; ++bi) {
          const double *s = partial.data() + ((pi * b + bi) * k + c) * 4;
          sum_p += s[0];
          sum_i += s[1];
          wce += wd[bi * k + c] * s[2];
        }
        const double cardinality = sum_p + t_sum[c] + kDiceEps;
        id[pi * k + c] = sum_i;
        cd[pi * k + c] = cardinality;
        dice += 2.0 * sum_i / cardinality;
      }
      ld[pi] = static_cast<float>(-wce * scale + 1.0 - dice / static_cast<double>(k));
    }

    variable_list saved(preds.begin(), preds.end());
    saved.push_back(target);
    saved.push_back(weights);
    ctx->save_for_backward(saved);
    ctx->saved_data["inter"] = inter;
    ctx->saved_data["card"] = card;
    return losses;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "seg_losses: no double backward");
    const variable_list saved = ctx->get_saved_variables();
    const int64_t n = static_cast<int64_t>(saved.size()) - 2;
    const at::Tensor &target = saved[n];
    const at::Tensor w = saved[n + 1].to(at::kDouble).contiguous();
    const at::Tensor inter = ctx->saved_data["inter"].toTensor();
    const at::Tensor card = ctx->saved_data["card"].toTensor();
    const at::Tensor g = grad_outputs[0].to(at::kDouble).contiguous();
    const int64_t b = target.size(0), k = target.size(1), hw = target.size(2) * target.size(3);

    // Per (prediction, image, class): c0 = g·(2/K)·I/C², c1 = -g·(2/K)/C, a = -g·w/(B·K·HW).
    const double *gd = g.data_ptr<double>(), *wd = w.data_ptr<double>();
    const double *id = inter.data_ptr<double>(), *cd = card.data_ptr<double>();
    const double scale = 1.0 / static_cast<double>(b * k * hw), dice = 2.0 / static_cast<double>(k);
    std::vector<float> coef(n * b * k * 3);
    for (int64_t pi = 0; pi < n; ++pi) {
      for (int64_t bi = 0; bi < b; ++bi) {
        for (int64_t c = 0; c < k; ++c) {
          const double cc = cd[pi * k + c];
          float *out = coef.data() + ((pi * b + bi) * k + c) * 3;
          out[0] = static_cast<float>(gd[pi] * dice * id[pi * k + c] / (cc * cc));
          out[1] = static_cast<float>(-gd[pi] * dice / cc);
          out[2] = static_cast<float>(-gd[pi] * wd[bi * k + c] * scale);
        }
      }
    }

    Targets targets(target);
    std::vector<Dense> p(n);
    std::vector<const float *> t(n);
    variable_list grads(n + 2);
    std::vector<int64_t> todo;  // predictions that need a gradient
    for (int64_t i = 0; i < n; ++i) {
      if (!ctx->needs_input_grad(i)) continue;
      p[i] = dense(saved[i]);
      t[i] = targets.in(p[i].channels_last);
      grads[i] = at::empty_like(p[i].tensor);  // the prediction's layout
      todo.push_back(i);
    }
    const int64_t units = static_cast<int64_t>(todo.size()) * b;
    at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> exp;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t pi = todo[u / b], bi = u % b;
        const Walk wk = walk(p[pi].channels_last, k, hw);
        exp.resize(3 * lanes(wk.period));
        const int64_t offset = bi * k * hw;
        const float *pd = p[pi].tensor.data_ptr<float>() + offset;
        const float *td = t[pi] + offset;
        float *gd_out = grads[pi].data_ptr<float>() + offset;
        for (int64_t r = 0; r < wk.rows; ++r) {
          run_grad(pd + r * wk.len, td + r * wk.len, gd_out + r * wk.len, wk.len, wk.period,
                   coef.data() + ((pi * b + bi) * k + r) * 3, exp);
        }
      }
    });
    return grads;
  }
};

}  // namespace

extern "C" {

// The N segmentation losses [N] (float32) of `n` predictions against `target`, with the
// cross-entropy weights `weights` [B, K]; differentiable in the predictions (see above).
void *dis2_seg_losses(void *const *preds, int64_t n, void *target, void *weights, char **error) {
  return dis2::new_tensor_or_error(error, [&] {
    const auto p = dis2::tensors(preds, n);
    return SegLosses::apply(at::TensorList(p), dis2::tensor(target), dis2::tensor(weights));
  });
}
}
