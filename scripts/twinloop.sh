#!/usr/bin/env bash
# The README's two commands:
#   scripts/twinloop.sh demo   install what is missing, build, run a session on the simulated rig
#   scripts/twinloop.sh test   install what is missing, build, run every test (release, then
#                              AddressSanitizer + UndefinedBehaviorSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-}
case "$what" in
  demo | test) ;;
  *)
    echo "usage: scripts/twinloop.sh demo|test" >&2
    exit 2
    ;;
esac

scripts/install-deps.sh
jobs=$(nproc)

build() {  # build PRESET
  cmake --preset "$1" >/dev/null
  cmake --build --preset "$1" -j "$jobs"
}

if [[ $what == demo ]]; then
  build release
  exec build/release/daemon/twinloop run config/examples/protocol_demo.yaml \
    --rig sim --seconds 60 --seed 1 --pace realtime
fi

start=$(date +%s)
echo "twinloop: checking formatting against .clang-format"
git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror
build release
ctest --preset release -j "$jobs"
build asan
ctest --preset asan -j "$jobs"
echo "twinloop: all tests passed (release and asan) in $(($(date +%s) - start)) s"
