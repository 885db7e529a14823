// Dropout masks from a counter-based hash instead of PyTorch's CPU `bernoulli_`, which draws each
// element from a sequential generator: the transformer's dropouts then cost more than its matrix
// products (figures in docs/model.md, "What makes it fast").
//
// Each call takes one 64-bit seed from PyTorch's default CPU generator (so `manual_seed` fixes
// the masks, and successive calls differ) and keeps element i where a hash of (seed, i) falls
// below (1 - p)·2^32. The hash (two rounds of MurmurHash3's 32-bit finaliser over the index,
// keyed by both halves of the seed) is uniform enough for dropout and vectorises; each element
// depends only on (seed, i), so the mask does not depend on the number of threads.
#include "common.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <mutex>

namespace {

inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// `out[i] = keep ? scale : 0` for elements `begin..end`.
__attribute__((target_clones("avx2", "default"))) void fill_mask(float *__restrict out,
                                                                int64_t begin, int64_t end,
                                                                uint32_t key0, uint32_t key1,
                                                                uint32_t threshold, float scale) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    uint32_t h = fmix32(fmix32(static_cast<uint32_t>(i) ^ key0) + key1 + static_cast<uint32_t>(i >> 32));
    out[i] = h < threshold ? scale : 0.0f;
  }
}

}  // namespace

extern "C" {

// A float mask like `like` (shape and dtype float32, CPU, contiguous): each element 1/(1 - p)
// with probability 1 - p, else 0 (PyTorch's dropout multiplies its input by such a mask).
// `draw`: take the seed from PyTorch's generator; otherwise use `given_seed`.
void *dis2_dropout_mask(void *like, double p, bool draw, uint64_t given_seed, char **error) {
  return dis2::new_tensor_or_error(error, [&] {
    const at::Tensor &x = dis2::tensor(like);
    TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_mask: p must lie in [0, 1), got ", p);
    TORCH_CHECK(x.is_cpu(), "dropout_mask: expected a CPU tensor");
    uint64_t seed = given_seed;
    if (draw) {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      seed = at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
    }
    auto mask = at::empty(x.sizes(), x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
    float *out = mask.data_ptr<float>();
    // keep when h < (1 - p)·2^32 (h is uniform on 0..2^32).
    double keep = (1.0 - p) * 4294967296.0;
    uint32_t threshold = keep >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(keep);
    float scale = 1.0f / static_cast<float>(1.0 - p);
    uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
    at::parallel_for(0, mask.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      fill_mask(out, begin, end, key0, key1, threshold, scale);
    });
    return mask;
  });
}
}
