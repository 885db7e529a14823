// libtorch's profiler (Kineto, CPU activities) for the benchmarks: which ops ran on the calling
// thread, their time and the floating-point operations libtorch counts for them (convolutions and
// matrix products). `dis2_profile_stop` sums the events per op name.
//
// With DIS2_PROFILE_SHAPES set, ops are told apart by their input shapes and dtypes too.
//
// Self time: each event's duration minus that of the events directly nested in it on the same
// thread (the ops it called), found by sorting the events by start and keeping a stack.
#include "common.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

ProfilerConfig config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true,
                        /*profile_memory=*/false, /*with_stack=*/false, /*with_flops=*/true);
}

struct Totals {
  int64_t calls = 0;
  uint64_t total_ns = 0, self_ns = 0, flops = 0;
};

struct Span {
  uint64_t thread, start, end, flops;
  std::string name;
};

// Per-name totals of `spans`, with self times.
std::map<std::string, Totals> totals(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) {
    if (a.thread != b.thread) return a.thread < b.thread;
    if (a.start != b.start) return a.start < b.start;
    return a.end > b.end;  // an enclosing event first
  });
  std::vector<uint64_t> self(spans.size());
  std::vector<size_t> stack;
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span &s = spans[i];
    self[i] = s.end - s.start;
    while (!stack.empty() && (spans[stack.back()].thread != s.thread ||
                              spans[stack.back()].end <= s.start)) {
      stack.pop_back();
    }
    if (!stack.empty()) {
      size_t parent = stack.back();
      self[parent] -= std::min(self[parent], s.end - s.start);
    }
    stack.push_back(i);
  }
  std::map<std::string, Totals> out;
  for (size_t i = 0; i < spans.size(); ++i) {
    Totals &t = out[spans[i].name];
    t.calls += 1;
    t.total_ns += spans[i].end - spans[i].start;
    t.self_ns += self[i];
    t.flops += spans[i].flops;
  }
  return out;
}

// The op's name, followed by its input shapes and dtypes when DIS2_PROFILE_SHAPES is set (to tell
// apart the calls of one op).
std::string label(const prof::KinetoEvent &e) {
  std::string name = e.name();
  if (std::getenv("DIS2_PROFILE_SHAPES") == nullptr || !e.hasShapes()) return name;
  std::ostringstream out;
  out << name;
  for (const auto &shape : e.shapes()) {
    out << " [";
    for (size_t i = 0; i < shape.size(); ++i) out << (i ? "," : "") << shape[i];
    out << "]";
  }
  if (e.hasTypes()) {
    for (const auto &t : e.dtypes()) out << " " << t;
  }
  return out.str();
}

}  // namespace

extern "C" {

// Starts recording the CPU ops of the calling thread (with shapes, for the operation counts).
int dis2_profile_start(char **error) {
  return dis2::status_or_error(error, [&] {
    std::set<ActivityType> activities{ActivityType::CPU};
    prof::prepareProfiler(config(), activities);
    prof::enableProfiler(config(), activities);
  });
}

// Stops recording; returns one line per op name, `name<TAB>calls<TAB>total_ns<TAB>self_ns<TAB>
// flops` (free with dis2_free_error), or null with `*error` set.
char *dis2_profile_stop(char **error) {
  try {
    auto result = prof::disableProfiler();
    std::vector<Span> spans;
    for (const auto &e : result->events()) {
      if (e.deviceType() != c10::DeviceType::CPU || e.endNs() < e.startNs()) continue;
      spans.push_back({e.startThreadId(), e.startNs(), e.endNs(), e.flops(), label(e)});
    }
    std::ostringstream text;
    for (const auto &[name, t] : totals(std::move(spans))) {
      text << name << '\t' << t.calls << '\t' << t.total_ns << '\t' << t.self_ns << '\t'
           << t.flops << '\n';
    }
    return strdup(text.str().c_str());
  } catch (const std::exception &e) {
    *error = strdup(e.what());
    return nullptr;
  }
}
}
