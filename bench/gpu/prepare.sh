#!/usr/bin/env bash
# Run here, before a GPU check: the wheels nodescope needs that the GPU machine's image
# lacks (it reaches no package index) and MNIST as .gz files, in .gpu/ (git-ignored).
# Then, with the device tool: run(command="bash bench/gpu/check.sh", carry=[".gpu"],
# timeout_s=560). Run with the venv active, after `nodescope fetch mnist`.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/mnist
# The versions this venv runs (pydantic needs its own pydantic-core exactly).
PACKAGES="pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions"
PACKAGES="$PACKAGES|xarray|netcdf4|cftime|dask|distributed|partd|locket|zict|tblib|tornado|kdepy"
# Python 3.12 is the GPU image's; its torch, numpy, pandas, scipy, matplotlib, rich,
# hypothesis and pytest-xdist stay as they are there.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl \
    $(python3 -m pip freeze | grep -iE "^($PACKAGES)==")
data=$(python3 -c "from nodescope.data.fetch import data_dir; print(data_dir())")
for f in "$data"/mnist/*-ubyte; do gzip -c "$f" >".gpu/mnist/$(basename "$f").gz"; done
du -sh .gpu
