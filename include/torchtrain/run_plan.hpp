// SPDX-License-Identifier: MIT
// RunPlan: how long a training run is, worked out from the arguments and the training loader's size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

/// Where a resumed run picks up: whole epochs done, and the micro-batches of the current epoch to skip.
struct ResumePoint {
  std::int64_t epochs_trained = 0;
  std::int64_t batches_to_skip = 0;
  /// A stream's position was restored from the checkpoint: the epoch continues from it, nothing is skipped.
  bool stream_restored = false;
};

/// The sizes HF's _inner_training_loop derives before it starts: an epoch is `batches_per_epoch` micro-batches
/// in windows of gradient_accumulation_steps, the last window possibly shorter.
struct RunPlan {
  std::int64_t batches_per_epoch = 0;  // this process's micro-batches per epoch
  std::int64_t updates_per_epoch = 0;  // optimizer steps per epoch, at least 1
  std::int64_t max_steps = 0;
  std::int64_t num_train_epochs = 0;
  /// Over a stream: an epoch ends when the stream does, so the epochs are as many as max_steps needs.
  bool streaming = false;

  /// The position of `global_step` in this run's epochs (HF's epochs_trained and steps_trained_in_current_epoch);
  /// with ignore_data_skip the epoch starts from its first batch.
  ResumePoint resume_point(std::int64_t global_step, bool ignore_data_skip, std::int64_t accumulation) const {
    ResumePoint point;
    point.epochs_trained = global_step / updates_per_epoch;
    if (!ignore_data_skip) point.batches_to_skip = (global_step % updates_per_epoch) * accumulation;
    return point;
  }
};

/// The plan of a run over a loader of `num_batches` micro-batches per process, from `num_examples`. Throws
/// ArgumentError when the loader yields no batch.
RunPlan plan_run(const TrainingArguments& args, std::size_t num_batches, std::size_t num_examples);

/// The plan of a run over a stream, whose length is unknown, as Hugging Face plans one over an IterableDataset:
/// max_steps updates, an epoch of at most max_steps x gradient_accumulation_steps micro-batches, and as many
/// epochs as that takes (num_train_epochs is INT64_MAX, Python's sys.maxsize). Throws ArgumentError when
/// max_steps is not set.
RunPlan plan_stream_run(const TrainingArguments& args);

}  // namespace torchtrain

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/run_plan.hpp"
#endif
