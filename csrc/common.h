// Shared by the native ops: every exported function takes and returns tch's tensor handles
// (`at::Tensor*`) and turns a C++ exception into a message that the Rust side reads and frees
// with `dis2_free_error`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

namespace dis2 {

inline const at::Tensor &tensor(void *handle) { return *static_cast<at::Tensor *>(handle); }

// Handles to tensors (shallow copies: they share storage with the caller's tensors).
inline std::vector<at::Tensor> tensors(void *const *handles, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(tensor(handles[i]));
  return out;
}

// Runs `f`, which returns a new tensor; an exception becomes `*error` and a null handle.
template <typename F> void *new_tensor_or_error(char **error, F &&f) {
  try {
    return new at::Tensor(f());
  } catch (const std::exception &e) {
    *error = strdup(e.what());
    return nullptr;
  }
}

// Runs `f`; an exception becomes `*error` and -1, success 0.
template <typename F> int status_or_error(char **error, F &&f) {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    *error = strdup(e.what());
    return -1;
  }
}

}  // namespace dis2
