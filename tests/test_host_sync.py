"""No host reads inside the training step or between eval chunks.

On a GPU every read of a device tensor on the host (.cpu(), .item(), float(), bool(), a
boolean-mask index, a tensor built from host data) waits for the device to finish all
queued work. Such reads may happen once per checkpoint or epoch, never once per step or
per eval chunk. A CPU run cannot see the waits, so this counts the calls that would
cause them: the same training with twice the steps and twice the eval chunks must make
exactly as many.
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import torch
from tiny_specs import every_probe_spec
from torch.overrides import TorchFunctionMode

from nodescope.runner.loss_readout import LossReadout
from nodescope.runner.train import train_group
from nodescope.spec import plan
from nodescope.spec.load import validate_dict

HOST_READS = {
    *("item", "tolist", "cpu", "numpy", "__array__", "__bool__", "__float__", "__int__"),
    *("__index__", "__repr__", "__format__", "equal", "allclose"),
    *("nonzero", "argwhere", "masked_select", "unique", "bincount"),  # output size from data
    *("tensor", "as_tensor"),  # host data copied to the device
}
# Not seen here: copies whose source or destination is a CPU tensor only on a GPU run
# (`.to(other.device)`, `host.copy_(t)`); `.to("cpu")` is seen, and bench/gpu/syncs.py
# counts the real waits on a GPU.
# Reads that happen only for CPU tensors: label validation in sample_sets, and the progress
# loss, which a GPU copies asynchronously (runner/loss_readout.py).
CPU_ONLY_FUNCTIONS = {"_check_labels"}
CPU_ONLY_FILES = {"loss_readout.py"}


class HostReads(TorchFunctionMode):
    """Counts, by nodescope source line, the torch calls that would read a GPU tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.where: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "to":
            read = "cpu" in (*args[1:], kwargs.get("device"))
        elif name == "where":  # where(cond) is nonzero(cond)
            read = len(args) + len(kwargs) == 1
        elif name == "repeat_interleave":  # tensor repeats: the output size is their sum
            read = isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor)
            read = read and kwargs.get("output_size") is None
        elif name in ("__getitem__", "__setitem__"):  # a boolean mask needs its nonzero count
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            read = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
        else:
            read = name in HOST_READS
        if read:
            ours = [f for f in traceback.extract_stack()[:-1] if "/src/nodescope/" in f.filename]
            frame = ours[-1] if ours else None
            if frame and frame.name not in CPU_ONLY_FUNCTIONS:
                path = frame.filename.split("/src/")[-1]
                if path.rsplit("/", 1)[-1] not in CPU_ONLY_FILES:
                    self.where[f"{path}:{frame.lineno} {name}"] += 1
        return func(*args, **kwargs)


def host_reads(batch_size: int, eval_chunk: int) -> Counter[str]:
    """Host reads of a 2-member group trained with every probe and progress reports (as
    `nodescope run` trains it)."""
    group = plan(validate_dict(every_probe_spec(batch_size, eval_chunk), "host-sync"))[0]
    with HostReads() as reads:
        train_group(group, torch.device("cpu"), progress=lambda *report: None)
    return reads.where


def test_host_reads_do_not_grow_with_steps_or_eval_chunks(one_thread):
    few = host_reads(batch_size=40, eval_chunk=50)
    many = host_reads(batch_size=10, eval_chunk=20)  # 4x the steps, 2.5x the chunks
    grown = {k: (few[k], many[k]) for k in few.keys() | many.keys() if few[k] != many[k]}
    assert not grown, f"host reads per step or chunk (fewer vs more steps/chunks): {grown}"
    assert sum(few.values()) > 0  # the counter sees the per-checkpoint reads


def test_the_counter_sees_a_read_per_chunk(one_thread, monkeypatch):
    """The check above can fail: a probe that copies each chunk's sums to the host."""
    from nodescope.metrics.curves import CurvesProbe

    original = CurvesProbe.update

    def copying(self, ck, batch):
        batch.loss.sum(1).cpu()
        original(self, ck, batch)

    monkeypatch.setattr(CurvesProbe, "update", copying)
    few, many = host_reads(40, 50), host_reads(10, 20)
    assert any(many[k] > few[k] for k in many if "runner/train.py" in k)


def test_cpu_loss_readout_is_the_mean():
    readout = LossReadout(torch.device("cpu"))
    assert readout.value != readout.value  # NaN before the first read
    assert readout.read(torch.tensor([[1.0, 2.0], [3.0, 6.0]])) == 3.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loss_readout_shows_the_latest_copy_that_arrived():
    readout = LossReadout(torch.device("cuda"))
    loss = torch.tensor([1.0, 3.0], device="cuda")
    first = readout.read(loss)  # sends the first copy; nothing has arrived yet
    assert first != first  # NaN
    torch.cuda.synchronize()
    assert readout.read(loss * 2) == 2.0  # the first copy has arrived; the second is sent
    torch.cuda.synchronize()
    assert readout.read(loss) == 4.0
    assert readout.settle() == 2.0  # waits for the copy just sent
