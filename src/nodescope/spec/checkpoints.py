"""Checkpoint schedule: which optimiser steps record probes. Pure Python, no torch."""

from __future__ import annotations

import math

from .model import Spec


def checkpoint_steps(spec: Spec) -> list[int]:
    """Sorted, de-duplicated optimiser steps at which probes are recorded.

    Epoch positions e > 0 become steps max(1, round(e * steps_per_epoch)); step 0 is the
    untrained network. The stored epoch of a checkpoint is step / steps_per_epoch, so fractional
    log-spaced positions keep their real value after rounding.
    """
    ck = spec.checkpoints
    spe = spec.steps_per_epoch()
    last = spec.training.epochs * spe
    epochs: list[float] = list(ck.at)
    if ck.log:
        lo, hi = math.log10(ck.log.start), math.log10(ck.log.stop)
        epochs += [10 ** (lo + (hi - lo) * i / (ck.log.num - 1)) for i in range(ck.log.num)]
    if ck.every:
        k = 1
        while k * ck.every <= spec.training.epochs + 1e-9:
            epochs.append(k * ck.every)
            k += 1
    steps = {max(1, round(e * spe)) if e > 0 else 0 for e in epochs}
    if ck.first_epoch_every_step:
        steps.update(range(1, spe + 1))
    if ck.initial:
        steps.add(0)
    if ck.final:
        steps.add(last)
    return sorted(s for s in steps if 0 <= s <= last)
