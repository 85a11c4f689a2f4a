// SPDX-License-Identifier: MIT
// TrainerState and Hugging Face's trainer_state.json: reading, writing, and the intervals from the arguments.
// The struct itself is in trainer_state_fields.hpp, which is all that a callback needs. The definitions are in
// impl/trainer_state.hpp, inline unless the program links torchtrain::compiled.
#pragma once

#include <nlohmann/json.hpp>  // what to_json and from_json take and return

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/errors.hpp"  // what they throw
#include "torchtrain/trainer_state_fields.hpp"

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/trainer_state.hpp"
#endif
