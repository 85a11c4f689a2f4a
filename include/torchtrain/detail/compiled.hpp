// SPDX-License-Identifier: MIT
// TORCHTRAIN_INLINE marks the definitions of non-template code. By default torchtrain is header-only and they
// are inline. A program that links torchtrain::compiled gets TORCHTRAIN_COMPILED defined: the headers then only
// declare that code, which the library compiled once.
#pragma once

#ifdef TORCHTRAIN_COMPILED
#define TORCHTRAIN_INLINE
#else
#define TORCHTRAIN_INLINE inline
#endif

// The return type of a member a struct's own header declares and a heavier header defines (TrainingArguments'
// validation and JSON, TrainerState's JSON). Header-only, it is deduced (`inline auto`): a translation unit that
// sees the declaration alone cannot call it, a compile error instead of a link error. With the compiled part,
// the library defines it and the type is spelled out.
#ifdef TORCHTRAIN_COMPILED
#define TORCHTRAIN_DEDUCED(type) type
#else
#define TORCHTRAIN_DEDUCED(type) inline auto
#endif
