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
