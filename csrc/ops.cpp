// Small native ops that tch does not expose with the arguments DIS2 needs.
#include "common.h"

#include <ATen/Parallel.h>
#include <ATen/ops/leaky_relu.h>
#include <omp.h>
#include <torch/csrc/autograd/autograd.h>

extern "C" {

// LeakyReLU with the given negative slope (autograd-aware: PyTorch's own kernel and backward).
void *dis2_leaky_relu(void *self, double slope, char **error) {
  return dis2::new_tensor_or_error(error, [&] { return at::leaky_relu(dis2::tensor(self), slope); });
}

// Backward pass from several roots at once, root i seeded with `grads[i]`
// (`torch.autograd.backward(tensors, grad_tensors)`), accumulating into the leaves' gradients.
int dis2_backward(void *const *roots, void *const *grads, int64_t n, char **error) {
  return dis2::status_or_error(error, [&] {
    torch::autograd::backward(dis2::tensors(roots, n), dis2::tensors(grads, n));
  });
}

// libtorch's MKL, per calling thread (the C interface; the lower-case symbol is Fortran's).
int MKL_Set_Num_Threads_Local(int n);

// Sets the number of intra-op threads of the calling thread only (OpenMP and MKL), leaving
// libtorch's process-wide default (`at::set_num_threads`) and every other thread alone; returns
// the calling thread's previous number.
int dis2_set_thread_local_threads(int n) {
  int previous = at::get_num_threads();  // also initialises this thread's settings first
  omp_set_num_threads(n);
  MKL_Set_Num_Threads_Local(n);
  return previous;
}

void dis2_free_error(char *error) { std::free(error); }
}
