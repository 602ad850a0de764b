"""Checkpoint schedule: which optimiser steps record probes. Pure Python, no torch."""

from __future__ import annotations

import math

from ..errors import UserError
from .model import Spec

MAX_CHECKPOINTS = 100_000


def checkpoint_steps(spec: Spec) -> list[int]:
    """Sorted, de-duplicated optimiser steps at which probes are recorded.

    Epoch positions e > 0 become steps max(1, round(e * steps_per_epoch)); step 0 is the
    untrained network. The stored epoch of a checkpoint is step / steps_per_epoch, so fractional
    log-spaced positions keep their real value after rounding.
    """
    ck = spec.checkpoints
    spe = spec.steps_per_epoch()
    last = spec.training.epochs * spe
    if ck.every and spec.training.epochs / ck.every > MAX_CHECKPOINTS:
        raise UserError(
            f"checkpoints.every = {ck.every:g} gives more than {MAX_CHECKPOINTS} checkpoints "
            f"in {spec.training.epochs} epochs; choose a larger interval"
        )
    if ck.log and ck.log.num > MAX_CHECKPOINTS:
        raise UserError(
            f"checkpoints.log.num = {ck.log.num} is more than {MAX_CHECKPOINTS} checkpoints; "
            "choose fewer"
        )
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
    inside = sorted(s for s in steps if 0 <= s <= last)
    if not inside:
        raise UserError(
            f"checkpoints: none falls inside the {spec.training.epochs} training epochs; "
            "set checkpoints.final = true or add epochs to checkpoints.at"
        )
    return inside


def weight_steps(spec: Spec) -> list[int]:
    """Checkpoint steps at which `checkpoints.weights` stores the members' parameters.

    true: every checkpoint; "final" or false: none (the trained network is stored apart
    whenever weights are on); a list of epochs: the checkpoints at those epochs, which must
    be checkpoints of the schedule.
    """
    wanted = spec.checkpoints.weights
    steps = checkpoint_steps(spec)
    if wanted is True:
        return steps
    if wanted is False or wanted == "final":
        return []
    spe = spec.steps_per_epoch()
    chosen = []
    for epoch in wanted:
        step = max(1, round(epoch * spe)) if epoch > 0 else 0
        if step not in steps:
            from ..errors import UserError

            raise UserError(
                f"checkpoints.weights: epoch {epoch:g} is not a checkpoint; add it to "
                "checkpoints.at or choose one of the scheduled checkpoints"
            )
        chosen.append(step)
    return sorted(set(chosen))
