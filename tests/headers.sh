#!/usr/bin/env bash
# Header hygiene, from the repository's root:
#   tests/headers.sh compile [HEADER...]  compiles each header alone (default: every one under include/), so that
#                                         each includes what it uses; STD=c++20 for the other standard
#   tests/headers.sh closure [HEADER...]  the torchtrain headers each one pulls in, and their lines, from g++ -M
# The flags are LibTorch's include folder and the definitions its CMake package adds (as
# build/compile_commands.json shows them).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-compile}
shift || true
cxx=${CXX:-g++}
flags=(-std="${STD:-c++17}" -Iinclude -isystem /usr/include/torch/csrc/api/include
       -DUSE_C10D_GLOO -DUSE_DISTRIBUTED -DUSE_RPC -DUSE_TENSORPIPE -D_GLIBCXX_USE_CXX11_ABI=1)

if [ $# -gt 0 ]; then
  headers=("$@")
else
  mapfile -t headers < <(cd include && find torchtrain -name '*.hpp' | sort)
fi

case $mode in
  compile)
    failed=0
    for header in "${headers[@]}"; do
      if ! echo "#include <$header>" | "$cxx" "${flags[@]}" -Wall -Wextra -fsyntax-only -x c++ -; then
        echo "FAILED: $header" >&2
        failed=1
      fi
    done
    [ $failed = 0 ] && echo "${#headers[@]} headers compile on their own (${flags[0]})"
    exit $failed
    ;;
  closure)
    printf '%-44s %8s %6s\n' header headers lines
    for header in "${headers[@]}"; do
      mapfile -t files < <(echo "#include <$header>" | "$cxx" "${flags[@]}" -M -x c++ - | tr ' \\' '\n\n' |
                           grep -o 'include/torchtrain/.*' | sort -u)
      printf '%-44s %8d %6d\n' "$header" "${#files[@]}" "$(cat "${files[@]}" | wc -l)"
    done
    ;;
  *)
    echo "usage: $0 compile|closure [HEADER...]" >&2
    exit 2
    ;;
esac
