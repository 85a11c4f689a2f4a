// SPDX-License-Identifier: MIT
// Checkpoints (namespace torchtrain::checkpoint): one header for the whole module.
//   checkpoint/layout.hpp      folder and file names, listing in step order, rotation, staging clean-up
//   checkpoint/manifest.hpp    CheckpointManifest: manifest.json, each file's size and CRC32C
//   checkpoint/validation.hpp  which folders can be resumed from: invalid_reason, get_last_checkpoint, resolve
//   checkpoint/state_io.hpp    a module's weights alone: save_module, load_module
//   checkpoint/save.hpp        save: crash-safe writing through a staging folder
//   checkpoint/load.hpp        load: all or nothing
#pragma once

#include "torchtrain/checkpoint/background_save.hpp"
#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/checkpoint/load.hpp"
#include "torchtrain/checkpoint/manifest.hpp"
#include "torchtrain/checkpoint/save.hpp"
#include "torchtrain/checkpoint/snapshot.hpp"
#include "torchtrain/checkpoint/state_io.hpp"
#include "torchtrain/checkpoint/validation.hpp"
