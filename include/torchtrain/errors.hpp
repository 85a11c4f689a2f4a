// SPDX-License-Identifier: MIT
// The exceptions torchtrain throws. Every message names the offending field or file and says how to fix it.
#pragma once

#include <stdexcept>
#include <string>

namespace torchtrain {

/// Base of every torchtrain exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A TrainingArguments field, a command-line flag or a constructor argument is invalid.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// A file (trainer_state.json, training_args.json, a CSV, a manifest) is missing or malformed.
class FileFormatError : public Error {
 public:
  using Error::Error;
};

/// A checkpoint cannot be written or loaded.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

/// A distributed run cannot start (bad RANK/WORLD_SIZE/MASTER_* variables, an unreachable store), or a
/// collective failed because another process exited or did not answer within ddp_timeout.
class DistributedError : public Error {
 public:
  using Error::Error;
};

/// SIGTERM or SIGINT stopped a run that cannot return early with TrainOutput::preempted_by (a trial of a
/// hyper-parameter search) after its checkpoint was saved; running the same call again continues from it.
class PreemptedError : public Error {
 public:
  PreemptedError(const std::string& what, int signal) : Error(what), signal_(signal) {}
  /// The signal that stopped the run; a program exits with 128 + signal, as a shell reports it.
  int signal() const { return signal_; }

 private:
  int signal_;
};

}  // namespace torchtrain
