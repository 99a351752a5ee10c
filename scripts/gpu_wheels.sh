#!/bin/bash
# Download, on a machine that reaches the package registry, the wheels a lent GPU machine lacks
# (scripts/gpu_wheels.txt) into .whl/ (ignored by git), for scripts/gpu_check.sh to install there.
# Usage, from the repository root: bash scripts/gpu_wheels.sh
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
grep -v '^#' scripts/gpu_wheels.txt | grep . | xargs python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
du -sh .whl
