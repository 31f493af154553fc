#!/usr/bin/env bash
# Installs the allocators the benchmarks compare NativeHeap with (Debian's packages).
set -euo pipefail
apt-get update -qq
apt-get install -y -qq libjemalloc2 libmimalloc2.0
