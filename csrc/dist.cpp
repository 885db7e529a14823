// Data-parallel training on libtorch's distributed engine, c10d (`src/dist/`): the rendezvous
// (TCPStore), the process group (Gloo for CPU tensors, NCCL for CUDA tensors where the build has
// it, see dist_nccl.cpp), collectives, and PyTorch DDP's gradient reducer (`c10d::Reducer`:
// gradients in buckets, each bucket all-reduced as soon as the backward pass has filled it).
// Everything lives in libtorch_cpu; Gloo's headers come from Debian's libgloo-dev.
#include "common.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <chrono>
#include <cstdlib>
#include <string>

namespace dis2 {
// dist_gloo.cpp: the Gloo backend, or an exception when this build has no Gloo headers.
c10::intrusive_ptr<c10d::Backend> gloo_backend(const c10::intrusive_ptr<c10d::Store> &store,
                                               int rank, int size,
                                               std::chrono::milliseconds timeout);
// dist_nccl.cpp: whether this build has NCCL, and its backend (an exception without).
bool nccl_built();
c10::intrusive_ptr<c10d::Backend> nccl_backend(const c10::intrusive_ptr<c10d::Store> &store,
                                               int rank, int size,
                                               std::chrono::milliseconds timeout);
}  // namespace dis2

namespace {

using Group = c10::intrusive_ptr<c10d::ProcessGroup>;

Group &group(void *handle) { return *static_cast<Group *>(handle); }

// The rendezvous store: a TCPStore at host:port (the server on rank 0 unless torchrun's agent
// serves it), under `prefix` so that the keys stay apart from the launcher's.
c10::intrusive_ptr<c10d::Store> rendezvous(const char *host, int port, int size, bool server,
                                           const char *prefix,
                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = server;
  opts.numWorkers = size;
  opts.waitWorkers = true;  // every rank counts itself in; the server waits for all
  opts.timeout = timeout;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
  return c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
}

// The message of an exception; c10's without the C++ backtrace.
char *message(const std::exception &e) {
  if (auto *c10 = dynamic_cast<const c10::Error *>(&e)) {
    return strdup(c10->what_without_backtrace());
  }
  return strdup(e.what());
}

// dis2::status_or_error with c10's messages without their backtrace.
template <typename F> int status_or_error(char **error, F &&f) {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    *error = message(e);
    return -1;
  }
}

void wait(const c10::intrusive_ptr<c10d::Work> &work) {
  if (!work->wait()) {
    throw std::runtime_error("collective did not complete");
  }
}

}  // namespace

extern "C" {

// Joins the process group of `size` processes as `rank`: rendezvous at host:port (rank 0 serves
// the store when `server`) and a Gloo backend for CPU tensors; when `cuda_device` >= 0, CUDA
// tensors go to an NCCL backend on that device, or to Gloo (through host memory) where this build
// has no NCCL. Collectives and the rendezvous give up after `timeout_ms`. Returns a handle to free
// with dis2_dist_free.
void *dis2_dist_init(const char *host, int port, int rank, int size, bool server,
                     const char *prefix, int64_t timeout_ms, int cuda_device, char **error) {
  using Type = c10d::ProcessGroup::BackendType;
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = rendezvous(host, port, size, server, prefix, timeout);
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
    auto gloo_store = c10::make_intrusive<c10d::PrefixStore>("gloo/", store);
    auto gloo = dis2::gloo_backend(gloo_store, rank, size, timeout);
    pg->setBackend(c10::DeviceType::CPU, Type::GLOO, gloo);
    pg->setDefaultBackend(Type::GLOO);
    if (cuda_device >= 0 && dis2::nccl_built()) {
      auto device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device));
      pg->setBoundDeviceId(device);
      auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("nccl/", store);
      auto nccl = dis2::nccl_backend(nccl_store, rank, size, timeout);
      pg->setBackend(c10::DeviceType::CUDA, Type::NCCL, nccl);
    } else if (cuda_device >= 0) {
      pg->setBackend(c10::DeviceType::CUDA, Type::GLOO, gloo);
    }
    return new Group(pg);
  } catch (const std::exception &e) {
    *error = message(e);
    return nullptr;
  }
}

// Whether CUDA tensors go through NCCL (else through Gloo).
bool dis2_dist_nccl_built() { return dis2::nccl_built(); }

void dis2_dist_free(void *handle) { delete static_cast<Group *>(handle); }

// Copies rank `root`'s values of `tensors` into every rank's (in few messages, as DDP's
// `_broadcast_coalesced`).
int dis2_dist_broadcast(void *handle, void *const *tensors, int64_t n, int root, char **error) {
  return status_or_error(error, [&] {
    auto ts = dis2::tensors(tensors, n);
    c10d::broadcast_coalesced(group(handle), ts, 256 * 1024 * 1024, root);
  });
}

// Sums `tensor` over the ranks, in place.
int dis2_dist_all_reduce_sum(void *handle, void *tensor, char **error) {
  return status_or_error(error, [&] {
    std::vector<at::Tensor> ts{dis2::tensor(tensor)};
    wait(group(handle)->allreduce(ts));
  });
}

// Returns when every rank has called it.
int dis2_dist_barrier(void *handle, char **error) {
  return status_or_error(error, [&] { wait(group(handle)->barrier()); });
}

// Fails, naming what differs, unless every rank has parameters of the same number, shapes and
// types as rank 0.
int dis2_dist_verify_params(void *handle, void *const *params, int64_t n, char **error) {
  return status_or_error(error, [&] {
    c10d::verify_params_across_processes(group(handle), dis2::tensors(params, n), std::nullopt);
  });
}

// PyTorch DDP's reducer over `params` (leaf tensors requiring gradients, in the order their
// gradients are expected, named by `names` for its messages): buckets of at most
// `bucket_bytes` (the first `first_bucket_bytes`), each all-reduced and divided by the world size
// as soon as the backward pass has produced its gradients. With `find_unused`, parameters the
// graph does not reach count as ready (their gradients stay as they are where no rank used them).
void *dis2_reducer_new(void *handle, void *const *params, const char *const *names, int64_t n,
                       int64_t bucket_bytes, int64_t first_bucket_bytes, bool find_unused,
                       char **error) {
  try {
    auto ps = dis2::tensors(params, n);
    std::vector<size_t> limits{static_cast<size_t>(first_bucket_bytes),
                               static_cast<size_t>(bucket_bytes)};
    std::vector<bool> sparse(ps.size(), false);
    auto [buckets, per_bucket_limits] =
        c10d::compute_bucket_assignment_by_size(ps, limits, sparse);
    std::unordered_map<size_t, std::string> param_names;
    for (int64_t i = 0; i < n; ++i) param_names[i] = names[i];
    return new c10d::Reducer(ps, buckets, group(handle), sparse, bucket_bytes, find_unused,
                             /*gradient_as_bucket_view=*/false, param_names, first_bucket_bytes,
                             /*skip_all_reduce_unused_params=*/false,
                             /*use_python_reducer=*/false, /*bucket_bytes_cap_list=*/{});
  } catch (const std::exception &e) {
    *error = message(e);
    return nullptr;
  }
}

// Arms the reducer for the next backward pass from `outputs` (its graph roots: the reducer looks
// there for the parameters a find-unused reducer will not see).
int dis2_reducer_prepare(void *reducer, void *const *outputs, int64_t n, char **error) {
  return status_or_error(error, [&] {
    static_cast<c10d::Reducer *>(reducer)->prepare_for_backward(dis2::tensors(outputs, n));
  });
}

// Frees the reducer (its destructor removes its hooks; it may throw, which is ignored: the
// process is usually ending).
void dis2_reducer_free(void *reducer) {
  try {
    delete static_cast<c10d::Reducer *>(reducer);
  } catch (const std::exception &) {
  }
}
}
