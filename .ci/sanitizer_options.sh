# Runtime options for programs built with -DTORCHTRAIN_SANITIZE=ON; `source` it before building (test discovery
# runs the test program) and before ctest. Every report is fatal and fails the program that made it.
# Leak detection stays on: LibTorch's start-up allocations stay reachable from its globals, so LeakSanitizer
# reports nothing without suppressions. Container-overflow checks need no exception either, since g++'s
# libstdc++ does not annotate its containers unless asked to.
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
