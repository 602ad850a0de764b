"""The training loss shown in progress reports, read without making a GPU wait.

Reading a CUDA tensor on the host (float(), .item()) blocks until the device has run
everything queued before it, which empties the queue of kernels that keeps a GPU busy
with these small networks. On a GPU the loss is therefore copied asynchronously into
pinned host memory, and a report shows the latest copy that has arrived (usually the
previous report's loss). On the CPU there is nothing to wait for: the value is read now.
"""

from __future__ import annotations

import torch


class LossReadout:
    def __init__(self, device: torch.device, value: float = float("nan")) -> None:
        self.value = value
        self._device = device
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._host: torch.Tensor | None = None  # pinned, in the loss's dtype
            self._copied = torch.cuda.Event()
            self._pending = False

    def read(self, loss: torch.Tensor) -> float:
        """The mean of `loss` (on the CPU), or the latest mean that reached the host."""
        if not self._cuda:
            self.value = float(loss.mean())
            return self.value
        if self._pending and self._copied.query():
            self.value = float(self._host)
            self._pending = False
        if not self._pending:
            mean = loss.mean()
            if self._host is None or self._host.dtype != mean.dtype:
                # the loss's own dtype: the copy moves its bytes, converting nothing
                self._host = torch.empty((), dtype=mean.dtype, pin_memory=True)
            self._host.copy_(mean, non_blocking=True)
            # the stream of the loss's GPU, which need not be the current device's
            self._copied.record(torch.cuda.current_stream(self._device))
            self._pending = True
        return self.value

    def settle(self) -> float:
        """The last loss sent, waiting for it once (at the end of training)."""
        if self._cuda and self._pending:
            self._copied.synchronize()
            self.value = float(self._host)
            self._pending = False
        return self.value
