#!/usr/bin/env bash
# The GPU checks of the performance issue in one call of about 9 minutes, run on the GPU
# machine from the repository root after bench/gpu/prepare.sh here. Each step has its own
# time limit, so a slow step leaves the others their time; logs go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 NODESCOPE_DATA=/tmp/nodescope-data
step() { # name, seconds, command...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 30 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}
NS=(python3 -m nodescope)
GRID=(specs/sample_sets.toml --device cuda --fresh --set training.epochs=2
    --set checkpoints.log.stop=2) # 1/100 of the epochs, all 50 checkpoints

step env 30 bash -c 'nvidia-smi -L; nproc; python3 -c "import torch, xarray, pydantic;
print(torch.__version__, torch.cuda.get_device_name(), xarray.__version__, pydantic.__version__)"'
step fetch 30 "${NS[@]}" fetch mnist --from .gpu/mnist
step tests 100 python3 -m pytest -q -n 8 --maxfail=20 -p no:cacheprovider tests
step syncs 40 python3 bench/gpu/syncs.py
step baselines 140 python3 bench/baselines.py --device cuda --repeat 2
step grid 90 "${NS[@]}" run "${GRID[@]}" --out /tmp/grid
step grid_workers4 90 "${NS[@]}" run "${GRID[@]}" --out /tmp/grid4 --workers 4
