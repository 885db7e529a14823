// Optimiser steps over all parameters in one call: PyTorch's fused SGD and AdamW kernels
// (`torch.optim.SGD(fused=True)`, `torch.optim.AdamW(fused=True)`). One call per step instead of
// four to six tensor operations per parameter: with a few hundred parameter tensors, the per-call
// overhead of the latter is what an optimiser step costs on the CPU.
#include "common.h"

#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/_fused_sgd.h>
#include <ATen/ops/scalar_tensor.h>

extern "C" {

// SGD with momentum (dampening 0) on `n` parameters: `buf = momentum·buf + g'` with
// `g' = grad + weight_decay·param`, then `param -= lr·(g' + momentum·buf)` (Nesterov) or
// `param -= lr·buf`. Momentum buffers must exist (zeros before the first step give PyTorch's
// first-step rule exactly, since 0·momentum + g' = g'); without momentum `bufs` is not read.
int dis2_sgd_step(void *const *params, void *const *grads, void *const *bufs, int64_t n, double lr,
                  double momentum, double weight_decay, bool nesterov, char **error) {
  return dis2::status_or_error(error, [&] {
    auto p = dis2::tensors(params, n);
    auto g = dis2::tensors(grads, n);
    // No buffers without momentum: the kernel then expects an empty list.
    auto b = dis2::tensors(bufs, momentum != 0.0 ? n : 0);
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0.0, nesterov,
                    /*maximize=*/false, /*is_first_step=*/false);
  });
}

// AdamW (no amsgrad) on `n` parameters; `steps[i]` is parameter i's update count including this
// one (the bias corrections use it).
int dis2_adamw_step(void *const *params, void *const *grads, void *const *exp_avgs,
                    void *const *exp_avg_sqs, const int64_t *steps, int64_t n, double lr,
                    double beta1, double beta2, double weight_decay, double eps, char **error) {
  return dis2::status_or_error(error, [&] {
    auto p = dis2::tensors(params, n);
    auto g = dis2::tensors(grads, n);
    auto m = dis2::tensors(exp_avgs, n);
    auto v = dis2::tensors(exp_avg_sqs, n);
    std::vector<at::Tensor> counts;
    counts.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      counts.push_back(at::scalar_tensor(static_cast<double>(steps[i]),
                                         p[i].options().dtype(at::kFloat)));
    }
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, counts, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

// Drops the gradients of `n` parameters (PyTorch's `zero_grad(set_to_none=True)`): the next
// backward pass writes fresh gradients instead of adding to zeroed ones, and a parameter the next
// step does not use keeps no gradient, so the optimiser leaves it alone.
int dis2_clear_grads(void *const *params, int64_t n, char **error) {
  return dis2::status_or_error(error, [&] {
    for (int64_t i = 0; i < n; ++i) {
      static_cast<at::Tensor *>(params[i])->mutable_grad().reset();
    }
  });
}
}
