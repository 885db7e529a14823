// The Gloo backend of the process group (csrc/dist.cpp): CPU tensors, and CUDA tensors through
// host memory where no NCCL was built. Compiled with DIS2_GLOO where Gloo's headers are installed
// (Debian's libgloo-dev; the code itself is in libtorch_cpu), see build.rs; elsewhere asking for
// it is an error that says so.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

#ifdef DIS2_GLOO
#define USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace dis2 {

#ifdef DIS2_GLOO
// The network device Gloo binds: the interface named by GLOO_SOCKET_IFNAME (as PyTorch reads it),
// else the address this machine's hostname resolves to (loopback when it resolves to none).
static std::shared_ptr<::gloo::transport::Device> gloo_device() {
  const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    std::string first(ifname);
    return c10d::ProcessGroupGloo::createDeviceForInterface(first.substr(0, first.find(',')));
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

c10::intrusive_ptr<c10d::Backend> gloo_backend(const c10::intrusive_ptr<c10d::Store> &store,
                                               int rank, int size,
                                               std::chrono::milliseconds timeout) {
#ifdef DIS2_GLOO
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(gloo_device());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
#else
  (void)store, (void)rank, (void)size, (void)timeout;
  throw std::runtime_error(
      "this dis2 build has no Gloo (its headers were missing when it was built: install "
      "Debian's libgloo-dev, as `make setup` does, and rebuild); data-parallel training needs it");
#endif
}

}  // namespace dis2
