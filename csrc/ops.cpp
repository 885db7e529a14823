// Small native ops that tch does not expose with the arguments DIS2 needs. Each takes and returns
// tch's tensor handles (`at::Tensor*`); an exception becomes a null return and a message that the
// Rust side reads and frees with `dis2_free_error`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/leaky_relu.h>

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// LeakyReLU with the given negative slope (autograd-aware: PyTorch's own kernel and backward).
void *dis2_leaky_relu(void *self, double slope, char **error) {
  try {
    const at::Tensor &x = *static_cast<at::Tensor *>(self);
    return new at::Tensor(at::leaky_relu(x, slope));
  } catch (const std::exception &e) {
    *error = strdup(e.what());
    return nullptr;
  }
}

void dis2_free_error(char *error) { std::free(error); }
}
