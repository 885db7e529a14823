// Small native ops that tch does not expose with the arguments DIS2 needs.
#include "common.h"

#include <ATen/ops/leaky_relu.h>

extern "C" {

// LeakyReLU with the given negative slope (autograd-aware: PyTorch's own kernel and backward).
void *dis2_leaky_relu(void *self, double slope, char **error) {
  return dis2::new_tensor_or_error(error, [&] { return at::leaky_relu(dis2::tensor(self), slope); });
}

void dis2_free_error(char *error) { std::free(error); }
}
