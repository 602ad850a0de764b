"""Train one stacked group: the training loop, checkpoint eval passes and stop rules."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import xarray as xr

from ..data.prepare import GroupData, build_group_data
from ..data.seeds import stream_seed
from ..metrics import PROBES, EvalBatch, Probe, ProbeContext
from ..metrics.base import TrainStep, variable
from ..models.loss import n_outputs, per_sample_loss, predictions
from ..models.mlp import StackedMLP
from ..optim.stacked import StackedOptimiser
from ..results.weights import WeightSnapshots
from ..spec import Group, checkpoint_steps
from ..spec.checkpoints import weight_steps
from .divergence import mask_diverged
from .loss_readout import LossReadout
from .resume import StateFile, object_state, restore_object_state

Progress = Callable[..., None]  # (step, total_steps, mean loss, phase="training")


@dataclass
class GroupRun:
    """What a trained group hands to the store."""

    variables: dict[str, xr.DataArray]
    steps: list[int]
    steps_per_epoch: int
    widths: list[int]
    class_names: list[str]
    wall_time: float
    weights: xr.Dataset | None = None  # stored parameters (checkpoints.weights)


def eval_batches(
    model: StackedMLP,
    data: GroupData,
    split: str,
    loss: str,
    chunk: int,
    keep: bool,
    dl_da: bool = False,
    acts: bool = False,
) -> Iterator[EvalBatch]:
    """The split in chunks of `chunk` samples, every member's outputs on each; with
    `keep`, every layer's z and a, with `acts`, its a alone.

    With `dl_da`, also the gradient of every sample's own loss L_s with respect to the
    hidden activations (samples are independent in eval mode, so one backward pass of
    the summed loss gives every dL_s/da).
    """
    sd = data.splits[split]
    for start in range(0, sd.size, chunk):
        stop = min(start + chunk, sd.size)
        index = torch.arange(start, stop, device=sd.x.device)
        targets = sd.targets[:, index]
        with torch.enable_grad() if dl_da else torch.no_grad():
            x = sd.range_inputs(start, stop)
            fwd = model(x, keep=keep or dl_da, grad_acts=dl_da, acts=acts)
            per_sample = per_sample_loss(fwd.out, targets, loss)
            grads = list(torch.autograd.grad(per_sample.sum(), fwd.acts)) if dl_da else None
        yield EvalBatch(
            split=split,
            index=index,
            labels=sd.labels[index],
            targets=targets,
            fwd=fwd,
            loss=per_sample.detach(),
            correct=predictions(fwd.out.detach(), loss) == targets,
            dl_da=grads,
        )


class SplitScore:
    """Mean per-sample loss and accuracy of every member, summed chunk by chunk."""

    def __init__(self, n_members: int, device: torch.device):
        self.loss = torch.zeros(n_members, dtype=torch.float64, device=device)
        self.right = torch.zeros_like(self.loss)
        self.n = 0

    def add(self, batch: EvalBatch) -> None:
        loss, right = batch.totals()
        self.loss += loss
        self.right += right
        self.n += batch.loss.shape[1]

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E,) mean loss and accuracy."""
        return self.loss / self.n, self.right / self.n


@torch.no_grad()
def evaluate(model, data, split, loss, chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,) mean loss and accuracy of every member on a split."""
    was_training = model.training
    model.eval()
    score = SplitScore(model.n_members, data.splits[split].x.device)
    for b in eval_batches(model, data, split, loss, chunk, keep=False):
        score.add(b)
    model.train(was_training)
    return score.means()


@torch.no_grad()
def record_checkpoint(
    model, data, probes: list[Probe], ck: int, loss: str, chunk: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One eval pass over every split some probe reads; each probe sees every chunk.
    Returns every member's mean loss and accuracy on the splits read without gradients,
    bit for bit as `evaluate` has them (with gradients on, the first layer multiplies one
    member at a time, which rounds differently)."""
    model.eval()
    scores = {}
    for split in sorted(set().union(*(p.splits() for p in probes))):
        readers = [p for p in probes if split in p.splits()]
        keep = any(p.needs_preacts for p in readers)
        grads = any(p.needs_dl_da for p in readers)
        acts = any(p.needs_acts for p in readers)
        score = None if grads else SplitScore(model.n_members, data.splits[split].x.device)
        for batch in eval_batches(model, data, split, loss, chunk, keep, grads, acts):
            if score is not None:
                score.add(batch)
            for probe in readers:
                probe.update(ck, batch)
        if score is not None:
            scores[split] = score.means()
    for probe in probes:
        probe.finish_checkpoint(ck)
    model.train()
    return scores


class StopRules:
    """Per-member stop rules checked at the end of every epoch.

    until_train_accuracy: a member stops updating once its training accuracy reaches it.
    early_stopping: a member stops after `patience` epochs without a val error improvement
    larger than `min_delta`; its best weights are restored at the end.
    """

    def __init__(self, group: Group, model: StackedMLP, data: GroupData):
        spec = group.spec.training
        self.until = spec.until_train_accuracy
        self.early = spec.early_stopping
        self.loss, self.chunk = spec.loss, spec.eval_chunk
        E = model.n_members
        self.active = torch.ones(E, dtype=torch.bool, device=model.weights[0].device)
        self.stop_epoch = np.full(E, np.nan)
        self.diverged_epoch = np.full(E, np.nan)
        self.best_error = torch.full((E,), float("inf"), dtype=torch.float64)
        self.best_epoch = np.zeros(E)
        self.bad_epochs = np.zeros(E, dtype=int)
        self.best_state = (
            {k: v.clone() for k, v in model.state_dict().items()} if self.early else None
        )
        self.model, self.data = model, data

    def end_of_epoch(self, epoch: int) -> None:
        if self.until is not None:
            _, acc = evaluate(self.model, self.data, "train", self.loss, self.chunk)
            done = (acc >= self.until - 1e-12) & self.active
            self._stop(done, epoch)
        if self.early:
            _, acc = evaluate(self.model, self.data, "val", self.loss, self.chunk)
            error = (1 - acc).cpu()
            better = (error < self.best_error - self.early.min_delta) & self.active.cpu()
            self.best_error = torch.where(better, error, self.best_error)
            self.best_epoch[better.numpy()] = epoch
            self.bad_epochs = np.where(better.numpy(), 0, self.bad_epochs + 1)
            state = self.model.state_dict()
            for k, v in state.items():
                mask = better.to(v.device).view(-1, *([1] * (v.dim() - 1)))
                self.best_state[k] = torch.where(mask, v, self.best_state[k])
            patience_out = torch.from_numpy(self.bad_epochs >= self.early.patience)
            self._stop(patience_out.to(self.active.device) & self.active, epoch)

    def check_divergence(self, epoch_loss: torch.Tensor, epoch: int) -> None:
        """Freeze the members whose summed training loss over the epoch is not finite."""
        bad = ~torch.isfinite(epoch_loss) & self.active
        if bool(bad.any()):
            self.diverged_epoch[bad.cpu().numpy()] = epoch
            self.active &= ~bad
            self.model.frozen = ~self.active

    @property
    def mask(self) -> torch.Tensor | None:
        """The active mask for the optimiser; None (all active) while no member stopped."""
        return None if len(self.active_members) == len(self.stop_epoch) else self.active

    @property
    def active_members(self) -> list[int]:
        """The members still training, from the host's record of stops (no device sync)."""
        return np.flatnonzero(np.isnan(self.stop_epoch) & np.isnan(self.diverged_epoch)).tolist()

    def _stop(self, done: torch.Tensor, epoch: int) -> None:
        self.stop_epoch[done.cpu().numpy()] = epoch
        self.active &= ~done
        self.model.frozen = ~self.active

    def finish(self) -> bool:
        """Restore the early-stopping weights; True where the model changed."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    @property
    def all_stopped(self) -> bool:
        return not bool(self.active.any())


RULES_SKIP = ("model", "data")  # StopRules attributes rebuilt from the group, not saved
PROBE_SKIP = ("options", "ctx")


def training_state(model, opt, orders, rules, probes, snapshots) -> dict:
    """Everything later training and probing depends on (see runner/resume.py)."""
    return {
        "model": model.state_dict(),
        "frozen": model.frozen,
        "optimiser": {"t": opt.t, "state": opt.state},
        "orders": [g.get_state() for g in orders],
        "rules": object_state(rules, RULES_SKIP),
        "probes": [object_state(p, PROBE_SKIP) for p in probes],
        "snapshots": snapshots.taken if snapshots else None,
    }


def restore_training(saved: dict, model, opt, orders, rules, probes, snapshots) -> None:
    model.load_state_dict(saved["model"])
    model.frozen = saved["frozen"]
    opt.load(saved["optimiser"])
    for g, order_state in zip(orders, saved["orders"], strict=True):
        g.set_state(order_state.cpu())
    restore_object_state(rules, saved["rules"])
    for probe, probe_state in zip(probes, saved["probes"], strict=True):
        restore_object_state(probe, probe_state)
    if snapshots:
        snapshots.taken = saved["snapshots"]


def _feed(probes: list, step: TrainStep, member: int, grad: torch.Tensor) -> None:
    for probe in probes:
        probe.on_train_grad(step, member, grad)


def _lr_scale(milestones: list[float], factor: float, epoch: float) -> float:
    """Step decay: lr * factor^(number of milestones <= the current epoch)."""
    return factor ** sum(epoch >= m for m in milestones)


def train_group(
    group: Group,
    device: torch.device,
    progress: Progress | None = None,
    state_file: StateFile | None = None,
) -> GroupRun:
    """Train and probe one group; with `state_file`, continue from its saved training
    state when there is one, and save it at the intervals of the spec's [resume] table."""
    started = time.perf_counter()
    # Subnormal floats (gradients of saturated units) slow CPU arithmetic by 10-20x.
    torch.set_flush_denormal(True)
    spec = group.spec
    specs = [m.spec for m in group.members]
    dtype = getattr(torch, spec.training.dtype)
    total = spec.training.epochs * spec.steps_per_epoch()
    if progress:
        progress(0, total, float("nan"), "loading data")
    data = build_group_data(specs, device, dtype)
    n_out = n_outputs(spec.training.loss, data.n_classes)
    model = StackedMLP(specs, spec.data.num_features, n_out).to(device=device, dtype=dtype)
    opt = StackedOptimiser(model.parameter_kinds(), specs)
    steps = checkpoint_steps(spec)
    ck_of = {s: i for i, s in enumerate(steps)}
    ctx = ProbeContext.of(specs, len(steps), model.widths, data)
    probes = [PROBES[name](opts, ctx) for name, opts in spec.probes.enabled()]
    rules = StopRules(group, model, data)
    step_probes = [p for p in probes if p.needs_train_steps]
    loss_kind, chunk = spec.training.loss, spec.training.eval_chunk
    sched = spec.optimiser.schedule

    train = data.splits["train"]
    n, batch = train.size, spec.batch_size()
    spe = spec.steps_per_epoch()
    orders = [torch.Generator().manual_seed(stream_seed(s.training.seed, "order")) for s in specs]

    snapshots = WeightSnapshots(weight_steps(spec), spe) if spec.checkpoints.weights else None

    # split -> every member's (loss, accuracy) of the model as it is now, from the eval
    # pass of a checkpoint taken since the last update: the final metrics reuse them
    current_scores = {}

    def checkpoint(at: int) -> None:
        current_scores.update(record_checkpoint(model, data, probes, ck_of[at], loss_kind, chunk))
        if snapshots:
            snapshots.at_checkpoint(model, at)

    step, first_epoch, last_loss, earlier_wall = 0, 0, float("nan"), 0.0
    saved = state_file.load(device) if state_file else None
    if saved is not None:
        step, first_epoch = saved["step"], saved["epoch"]
        last_loss, earlier_wall = saved["last_loss"], saved["wall_time"]
        restore_training(saved, model, opt, orders, rules, probes, snapshots)
    elif 0 in ck_of:
        if progress:
            progress(0, total, last_loss, "first checkpoint")
        checkpoint(0)
    model.train()
    readout = LossReadout(device, last_loss)
    # A full batch holds every sample, so its order changes nothing but float rounding:
    # every member takes the samples in order, and members that see the same inputs share
    # one (B, F) block instead of a gathered (E, B, F) copy per step.
    full_batch = batch >= n
    everything = torch.arange(n, device=device)
    for epoch in range(first_epoch, spec.training.epochs):
        if full_batch:
            perm = everything.expand(len(specs), n)
        else:
            perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        epoch_loss = torch.zeros(len(specs), device=device)
        mask, active_members = rules.mask, rules.active_members  # they change at epoch ends
        for start in range(0, n, batch):
            index = perm[:, start : start + batch]
            x = train.range_inputs(0, n) if full_batch else train.inputs(index)
            feed = None
            if step_probes:  # they read dL/da member by member inside the backward pass
                feed = partial(_feed, step_probes, TrainStep(index, mask, full_batch))
            fwd = model(x, last_grad=feed)
            loss = per_sample_loss(fwd.out, train.targets.gather(1, index), loss_kind).mean(1)
            opt.zero_grad()
            loss.sum().backward()
            epoch_loss += loss.detach()
            opt.step(_lr_scale(sched.milestones, sched.factor, step / spe), mask, active_members)
            current_scores.clear()
            step += 1
            if step in ck_of:
                checkpoint(step)
            if progress and (step % 10 == 0 or step == total):
                last_loss = readout.read(loss.detach())
                progress(step, total, last_loss)
        rules.check_divergence(epoch_loss, epoch + 1)
        rules.end_of_epoch(epoch + 1)
        if state_file and not rules.all_stopped and state_file.due(epoch + 1):
            state = training_state(model, opt, orders, rules, probes, snapshots)
            wall = earlier_wall + time.perf_counter() - started
            state.update(step=step, epoch=epoch + 1, last_loss=last_loss, wall_time=wall)
            state_file.save(state, epoch + 1)
        if rules.all_stopped:
            # Every member is frozen: later checkpoints record the frozen networks, as
            # they would if a still-training member had kept the group going.
            for later in steps:
                if later > step:
                    checkpoint(later)
            break
    last_loss = readout.settle()
    if progress:
        progress(step, total, last_loss, "final evaluation")
    if rules.finish():
        current_scores.clear()
    model.eval()
    if snapshots:
        snapshots.final(model, step)
    with torch.no_grad():
        for probe in probes:
            probe.on_end(model)
    if progress:
        progress(total, total, last_loss, "writing")

    variables = {}
    for probe in probes:
        variables.update(probe.results())
    variables.update(_final_metrics(model, data, loss_kind, chunk, current_scores))
    variables["stop_epoch"] = variable(
        ("member",),
        rules.stop_epoch,
        "stop epoch",
        "epoch",
        "epoch at whose end a stop rule froze the member (NaN: trained all epochs)",
    )
    if rules.early:
        variables["best_val_error"] = variable(
            ("member",),
            rules.best_error.numpy(),
            "best validation error",
            "1",
            "lowest val-split error over the epochs; early stopping restored these weights",
        )
        variables["best_epoch"] = variable(
            ("member",),
            rules.best_epoch,
            "best epoch",
            "epoch",
            "epoch at whose end the member reached best_val_error (its restored weights)",
        )
    if data.corrupted is not None:
        variables["label_corrupted"] = variable(
            ("member", "train_sample"),
            data.corrupted.astype(np.int8),
            "label corrupted",
            "1",
            "1 where noise.label_fraction replaced the training label by a uniform random class",
        )
    variables = mask_diverged(variables, rules.diverged_epoch, np.array(steps) / spe)
    wall = earlier_wall + time.perf_counter() - started
    variables["wall_time"] = variable(
        ("member",),
        np.full(len(specs), wall),
        "group wall time",
        "s",
        "wall-clock seconds to train and probe the stacked group the member belongs to",
    )
    weights = snapshots.dataset(group) if snapshots else None
    return GroupRun(variables, steps, spe, model.widths, data.class_names, wall, weights)


def _final_metrics(model, data, loss_kind, chunk, known: dict) -> dict[str, xr.DataArray]:
    """Loss and accuracy of the trained members on every split; `known` holds those of
    the splits a checkpoint has already evaluated on these weights."""
    splits = [s for s in ("train", "val", "test") if s in data.splits]
    results = [known.get(s) or evaluate(model, data, s, loss_kind, chunk) for s in splits]
    loss = np.stack([r[0].cpu().numpy() for r in results], axis=1)
    acc = np.stack([r[1].cpu().numpy() for r in results], axis=1)
    coords = {"split": splits}
    return {
        "final_loss": variable(
            ("member", "split"),
            loss,
            "final loss",
            "1",
            "mean per-sample loss of the trained member on the split",
        ).assign_coords(coords),
        "final_accuracy": variable(
            ("member", "split"),
            acc,
            "final accuracy",
            "1",
            "fraction of the split predicted correctly by the trained member",
        ).assign_coords(coords),
    }
