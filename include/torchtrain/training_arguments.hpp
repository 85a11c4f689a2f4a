// SPDX-License-Identifier: MIT
// TrainingArguments: every knob of the training loop, with Hugging Face's names, defaults and validation rules;
// its validation, JSON round trip and TrainingArguments::parse. The struct itself is in
// training_arguments_fields.hpp, for code that only reads the fields; ArgumentParser, for programs with flags of
// their own, in argument_parser.hpp, which this header includes at its end. The definitions are in
// impl/training_arguments.hpp, inline unless the program links torchtrain::compiled.
#pragma once

#include <nlohmann/json.hpp>  // what to_json and from_json take and return

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/errors.hpp"  // what they throw
#include "torchtrain/training_arguments_fields.hpp"

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/training_arguments.hpp"
#endif

// ArgumentParser builds on the definitions above; with it, this header gives the whole TrainingArguments API.
#include "torchtrain/argument_parser.hpp"
