// The NCCL backend of the process group (csrc/dist.cpp) for CUDA tensors. Compiled with
// DIS2_NCCL where libtorch has CUDA and the headers of NCCL, the CUDA runtime and its C runtime
// and CCCL are in the torch venv's nvidia packages (build.rs; scripts/setup.sh installs the two
// header-only ones); elsewhere CUDA tensors go through Gloo.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <stdexcept>

#ifdef DIS2_NCCL
#define USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dis2 {

bool nccl_built() {
#ifdef DIS2_NCCL
  return true;
#else
  return false;
#endif
}

// The NCCL backend of rank `rank` of `size`; its device is the process group's bound device.
c10::intrusive_ptr<c10d::Backend> nccl_backend(const c10::intrusive_ptr<c10d::Store> &store,
                                               int rank, int size,
                                               std::chrono::milliseconds timeout) {
#ifdef DIS2_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
  (void)store, (void)rank, (void)size, (void)timeout;
  throw std::runtime_error("this dis2 build has no NCCL");
#endif
}

}  // namespace dis2
