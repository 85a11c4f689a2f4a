// SPDX-License-Identifier: MIT
// ProcessGroup: the processes of a distributed run, joined through LibTorch's c10d (Gloo on the CPU, NCCL on CUDA).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/types.h>

// c10d declares its Gloo backend only under this macro, which LibTorch's CMake target defines for its users.
#ifndef USE_C10D_GLOO
#error "torchtrain needs USE_C10D_GLOO defined: link LibTorch through CMake (${TORCH_LIBRARIES}) or pass -DUSE_C10D_GLOO"
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "torchtrain/detail/error_text.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain {

/// Where this process stands in a distributed run, as torchrun (or a user) describes it in the environment.
struct DistributedEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  std::uint16_t master_port = 0;
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts the store and every rank connects to it.
  bool agent_store = false;
  /// Keys of this launch attempt inside the store (torchrun restarts workers under a new attempt number).
  std::string store_prefix;

  /// The run described by RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or nothing when neither
  /// RANK nor WORLD_SIZE is set. A partial or malformed description is a DistributedError naming the variable.
  static std::optional<DistributedEnvironment> from_environment() {
    if (!std::getenv("RANK") && !std::getenv("WORLD_SIZE")) return std::nullopt;
    DistributedEnvironment env;
    env.world_size = static_cast<int>(integer("WORLD_SIZE", 1, 1 << 20, std::nullopt));
    env.rank = static_cast<int>(integer("RANK", 0, env.world_size - 1, std::nullopt));
    env.local_rank = static_cast<int>(integer("LOCAL_RANK", 0, 1 << 20, env.rank));
    const char* addr = std::getenv("MASTER_ADDR");
    env.master_addr = addr && *addr ? addr : "127.0.0.1";
    if (env.world_size > 1 && !(addr && *addr))
      throw DistributedError("MASTER_ADDR is not set; set it to the address of the machine running rank 0 "
                             "(127.0.0.1 on a single machine)");
    env.master_port = static_cast<std::uint16_t>(integer("MASTER_PORT", 1, 65535, env.world_size > 1
                                                                                      ? std::nullopt
                                                                                      : std::optional<long>(29500)));
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    env.agent_store = agent && std::string(agent) == "True";
    const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
    env.store_prefix = std::string("/worker/attempt_") + (attempt && *attempt ? attempt : "0");
    return env;
  }

 private:
  // Variable `name` as an integer in [low, high]; `fallback` when unset (nothing: it must be set).
  static long integer(const char* name, long low, long high, std::optional<long> fallback) {
    const char* text = std::getenv(name);
    if (!text || !*text) {
      if (fallback) return *fallback;
      throw DistributedError(std::string(name) + " is not set; a distributed run needs RANK, WORLD_SIZE, "
                             "MASTER_ADDR and MASTER_PORT (torchrun sets them all)");
    }
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*end != '\0' || value < low || value > high)
      throw DistributedError(std::string(name) + "=" + text + " is not an integer in [" + std::to_string(low) +
                             ", " + std::to_string(high) + "]; fix the variable or let torchrun set it");
    return value;
  }
};

/// The processes of one distributed run. Every collective waits at most `timeout`; one that fails (another
/// process exited, or did not arrive in time) throws DistributedError naming the operation.
class ProcessGroup {
 public:
  /// Connects to the store (rank 0 hosts it unless torchrun's agent does) and joins the group: NCCL for CUDA
  /// devices (only where LibTorch was built with it), Gloo otherwise.
  ProcessGroup(const DistributedEnvironment& env, std::chrono::seconds timeout, const torch::Device& device)
      : env_(env), timeout_(timeout), device_(device.is_cuda() ? device : torch::Device(torch::kCPU)) {
    try {
      c10d::TCPStoreOptions options;
      options.port = env.master_port;
      options.isServer = !env.agent_store && env.rank == 0;
      options.numWorkers = static_cast<std::size_t>(env.world_size);  // each rank checks in, as Python's ranks do
      options.timeout = timeout;
      auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix + "/default_pg", store);
      store_ = store;
      if (device_.is_cuda()) {
#ifdef USE_C10D_NCCL
        auto nccl = c10d::ProcessGroupNCCL::Options::create();
        nccl->timeout = timeout;
        group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env.rank, env.world_size, nccl);
#else
        throw DistributedError("training on " + device_.str() + " needs c10d's NCCL backend, and this LibTorch "
                               "was built without it; train on the CPU (--use_cpu) or use a CUDA build of LibTorch");
#endif
      } else {
        auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
        const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
        gloo->devices.push_back(interface && *interface
                                    ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                    : c10d::ProcessGroupGloo::createDefaultDevice());
        group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, gloo);
      }
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      throw DistributedError("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             " cannot join the process group at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + ": " + text_of(e) +
                             "; check MASTER_ADDR/MASTER_PORT and that every rank was started");
    }
  }

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  const DistributedEnvironment& environment() const { return env_; }
  std::chrono::seconds timeout() const { return timeout_; }
  /// Where collectives take their tensors: the CPU for Gloo, the training device for NCCL.
  const torch::Device& device() const { return device_; }

  /// Sums (or reduces with `op`) `tensor` over the ranks, in place.
  void all_reduce(torch::Tensor& tensor, const std::string& what, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = op;
    options.timeout = timeout_;
    run(what, [&] { return group_->allreduce(tensors, options); });
  }

  /// Overwrites `tensor` on every rank with rank `root`'s.
  void broadcast(torch::Tensor& tensor, const std::string& what, int root = 0) {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = timeout_;
    run(what, [&] { return group_->broadcast(tensors, options); });
  }

  /// Every rank's `tensor` (same shape and type on all ranks), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor, const std::string& what) {
    std::vector<at::Tensor> input{tensor.contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < env_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
    c10d::AllgatherOptions options;
    options.timeout = timeout_;
    run(what, [&] { return group_->allgather(output, input, options); });
    return output[0];
  }

  /// Returns once every rank has called it.
  void barrier(const std::string& what) {
    c10d::BarrierOptions options;
    options.timeout = timeout_;
    run(what, [&] { return group_->barrier(options); });
  }

 private:
  template <class Start>
  void run(const std::string& what, Start&& start) {
    try {
      auto work = start();
      if (!work->wait(timeout_)) throw std::runtime_error("timed out");
    } catch (const std::exception& e) {
      throw DistributedError("rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world_size) + ": " +
                             what + " failed (" + text_of(e) + "); another process of the run exited or did not " +
                             "reach it within ddp_timeout (" + std::to_string(timeout_.count()) +
                             " s): see its own output for why");
    }
  }

  static std::string text_of(const std::exception& e) {
    std::string text = detail::error_text(e);
    if (const auto newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
    return text;
  }

  DistributedEnvironment env_;
  std::chrono::seconds timeout_;
  torch::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;  // rank 0's hosts the store that the others joined through
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

/// The process group described by the environment, joined on first use and shared by every Trainer of the
/// process (as torch.distributed's default group is); null when the environment describes no distributed run.
/// `timeout` and `device` apply when it is joined.
inline std::shared_ptr<ProcessGroup> world_process_group(std::chrono::seconds timeout, const torch::Device& device) {
  static std::mutex mutex;
  static std::shared_ptr<ProcessGroup> group;
  std::lock_guard<std::mutex> lock(mutex);
  if (group) return group;
  const auto env = DistributedEnvironment::from_environment();
  if (!env || env->world_size == 1) return nullptr;
  group = std::make_shared<ProcessGroup>(*env, timeout, device);
  return group;
}

}  // namespace torchtrain
