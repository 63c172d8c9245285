#!/usr/bin/env bash
# Download, here, the wheels the GPU machines lack (their image has torch 2.11, triton, tokenizers, rich,
# typer, pyyaml, pyarrow, pandas, matplotlib, ...; see the device tool's KINDS.md), for Python 3.12 on
# x86-64, into .whl/ (git-ignored through .git/info/exclude). scripts/gpu_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PACKAGES=(
  torchtitan==0.2.2 datasets==5.2.0 torchdata==0.11.0 tyro==1.0.17 docstring-parser typeguard==4.6.1
  tomli==2.5.0 multiprocess==0.70.19 dill==0.4.1 jsonschema==4.26.0 jsonschema-specifications referencing==0.37.0
  rpds-py
)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PACKAGES[@]}"
du -sh .whl
