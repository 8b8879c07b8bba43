#!/usr/bin/env bash
# Installs the Debian 12 packages twinloop builds and tests with, and only those that are missing.
# Idempotent: a second run installs nothing and does not touch the network.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git clang-format
  libboost-dev            # Boost.Lockfree (SPSC queues), Boost.Asio (session engine)
  libyaml-cpp-dev         # protocols
  libspdlog-dev libfmt-dev  # asynchronous logging
  libcli11-dev            # command line
  nlohmann-json3-dev      # probeinterface JSON, summaries
  libhwy-dev              # SIMD kernels with runtime dispatch (portable binaries)
  libsqlite3-dev          # the session record
  libssl-dev              # SHA-256 for the session record's hash chain
  libzmq3-dev cppzmq-dev  # ZeroMQ: network probe stream, stimulus endpoint, monitoring, control
  python3-zmq             # the Python client example and the tests that run it
  libtorch-dev            # twins (twin/ only), CPU build
  python3-torch           # exporting users' TorchScript twins (example script, tests)
  libgtest-dev libgmock-dev  # tests
  python3-numpy           # tests check that numpy reads the .npy files we write
  libmatio-dev            # real V1 responses (MATLAB v5 files, read unmodified)
  libhdf5-dev             # NWB 2.x export (HDF5)
  python3-h5py            # tests check exported NWB files against the NWB layout
  python3-pandas          # the session-reading example (sqlite3 + pandas) and its test
  chromium                # tests render the HTML validation report headless
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  sudo=sudo
else
  sudo=
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
