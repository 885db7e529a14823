// Mixed precision: libtorch's autocast per device type (tch 0.26 only switches the deprecated
// CUDA-only flag, whose lower precision is float16), and what libtorch itself detected of the
// CPU's bfloat16 support.
//
// Autocast state is per thread, as in PyTorch: `dis2_autocast_enter` saves the calling thread's
// state for the device type, sets the new one and counts the nesting; `dis2_autocast_exit`
// restores it and, when the outermost region ends, drops the cached bfloat16 copies of weights
// (the same steps as `torch.autocast.__enter__` / `__exit__`).
#include "common.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

#include <string>

namespace {

c10::DeviceType device_type(int code) {
  switch (code) {
    case 0:
      return c10::DeviceType::CPU;
    case 1:
      return c10::DeviceType::CUDA;
    default:
      TORCH_CHECK(false, "autocast: unknown device type code ", code);
  }
}

}  // namespace

extern "C" {

// Sets autocast for `device` (0 CPU, 1 CUDA) to `enabled` with bfloat16 as the lower precision;
// writes the previous flag and dtype (a c10::ScalarType code) for `dis2_autocast_exit`.
int dis2_autocast_enter(int device, bool enabled, bool *was_enabled, int *was_dtype,
                        char **error) {
  return dis2::status_or_error(error, [&] {
    auto type = device_type(device);
    *was_enabled = at::autocast::is_autocast_enabled(type);
    *was_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, enabled);
    at::autocast::increment_nesting();
  });
}

// Restores what `dis2_autocast_enter` saved; the outermost exit clears the cast cache.
int dis2_autocast_exit(int device, bool was_enabled, int was_dtype, char **error) {
  return dis2::status_or_error(error, [&] {
    auto type = device_type(device);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, was_enabled);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(was_dtype));
  });
}

// Whether autocast is on for `device` in the calling thread (for tests).
bool dis2_autocast_enabled(int device) {
  try {
    return at::autocast::is_autocast_enabled(device_type(device));
  } catch (const std::exception &) {
    return false;
  }
}

// libtorch's own reading of a boolean CPU capability (cpuinfo), e.g. "avx512_bf16" or
// "amx_bf16": 1 yes, 0 no, -1 when libtorch does not report that name.
int dis2_cpu_capability(const char *name) {
  try {
    auto caps = at::cpu::get_cpu_capabilities();
    auto it = caps.find(std::string(name));
    if (it == caps.end() || !it->second.isBool()) return -1;
    return it->second.toBool() ? 1 : 0;
  } catch (const std::exception &) {
    return -1;
  }
}
}
