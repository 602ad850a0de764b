"""Host synchronisations of a training run on CUDA, counted by nodescope source line.

torch's sync debug mode warns at every call that makes the host wait for the GPU. The
group of `every_probe_spec` (tests/tiny_specs.py: two members, every probe) is trained
twice, the second time with 4x the steps and 2.5x the eval chunks: a line whose count
grows waits once per step or chunk. On the CPU, tests/test_host_sync.py counts the calls
that would wait.

    python bench/gpu/syncs.py      # on a CUDA machine (bench/gpu/check.sh runs it)
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from tiny_specs import every_probe_spec  # noqa: E402

from nodescope.runner.train import train_group  # noqa: E402
from nodescope.spec import plan  # noqa: E402
from nodescope.spec.load import validate_dict  # noqa: E402


def syncs(batch_size: int, eval_chunk: int) -> Counter[str]:
    group = plan(validate_dict(every_probe_spec(batch_size, eval_chunk), "syncs"))[0]
    where: Counter[str] = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        ours = [f for f in traceback.extract_stack() if "/src/nodescope/" in f.filename]
        frame = f"{ours[-1].filename.split('/src/')[-1]}:{ours[-1].lineno}" if ours else "?"
        where[frame] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_group(group, torch.device("cuda"), progress=lambda *report: None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return where


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    syncs(40, 50)  # warm-up: one-time waits (CUDA context, first kernels) happen here
    few, many = syncs(40, 50), syncs(10, 20)
    print(f"host synchronisations: {sum(few.values())} (few steps), {sum(many.values())} (4x)")
    for line in sorted(few.keys() | many.keys()):
        grows = "  GROWS" if many[line] > few[line] else ""
        print(f"  {few[line]:5d} {many[line]:5d}  {line}{grows}")
    return 1 if any(many[k] > few[k] for k in many) else 0


if __name__ == "__main__":
    sys.exit(main())
