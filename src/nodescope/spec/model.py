"""The experiment spec as pydantic models: one class per TOML table.

Imports no torch, so `nodescope validate` stays instant.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
# Seeds feed numpy's SeedSequence and torch generators: non-negative, below 2^63.
Seed = Annotated[int, Field(ge=0, lt=2**63)]
# A threshold on a sigmoid's output, strictly inside (0, 1).
SigmoidThreshold = Annotated[float, Field(gt=0.0, lt=1.0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
MAX_DEPTH = 10_000  # hidden layers; the papers use at most 10
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Sizes of the IDX data sets nodescope knows, so plans can be made without reading them.
IDX_SIZES = {
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "aggregated_mnist": (60000, 10000),
}
IDX_CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "aggregated_mnist": ["0-4", "5-9"],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    tag: str = ""  # a member label; zip it with other sweep axes to name variants

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if set(self.name) == {"."}:
            raise ValueError(f"name {self.name!r} is not a folder name; use letters or digits")
        return self


class Data(Strict):
    """Which samples the networks see.

    Synthetic hierarchical patterns follow Algorithm 1 of the winner-take-most paper;
    the IDX data sets carve `val_size` samples out of the official training set with
    the fixed permutation seed `val_seed`.
    """

    name: Literal["synthetic_patterns", "mnist", "fashion_mnist", "aggregated_mnist"]
    train_size: PositiveInt | None = None
    val_size: NonNegativeInt | None = None
    test_size: PositiveInt | None = None
    val_seed: Seed = 0
    scaling: Literal["unit", "standard", "none"] = "unit"
    # synthetic_patterns only
    seed: Seed = 0
    n_data: PositiveInt | None = None
    n_dim: PositiveInt = 500
    n_patterns: PositiveInt = 30
    pattern_length: PositiveInt = 5
    delta: float = 1.0
    sigma: Annotated[float, Field(ge=0.0)] = 0.4
    sigma_test: Annotated[float, Field(ge=0.0)] | None = None
    n_classes: Annotated[int, Field(ge=2)] = 2
    overlap: bool = False
    # synthetic: members with different sigma draw independent noise (as the paper), or
    # share one noise stream scaled by sigma (common random numbers, less variance)
    noise_draws: Literal["independent", "common"] = "independent"

    @model_validator(mode="after")
    def _check(self) -> Data:
        if self.name == "synthetic_patterns":
            if self.n_patterns % self.n_classes:
                raise ValueError(
                    f"n_patterns ({self.n_patterns}) must be a multiple of n_classes "
                    f"({self.n_classes})"
                )
            if not self.overlap and self.n_patterns * self.pattern_length > self.n_dim:
                raise ValueError(
                    f"{self.n_patterns} non-overlapping patterns of length {self.pattern_length} "
                    f"need n_dim >= {self.n_patterns * self.pattern_length}; raise n_dim or "
                    "set overlap = true"
                )
            if self.n_data is not None and self.n_data != sum(self.sizes()):
                raise ValueError(
                    f"n_data ({self.n_data}) must equal train_size + val_size + test_size "
                    f"({sum(self.sizes())}); drop n_data or fix the sizes"
                )
        else:
            n_train_total, n_test_total = IDX_SIZES[self.name]
            train, val, test = self.sizes()
            if train + val > n_train_total:
                raise ValueError(
                    f"train_size + val_size = {train + val} exceeds the {n_train_total} "
                    f"training samples of {self.name}"
                )
            if test > n_test_total:
                raise ValueError(f"test_size must be <= {n_test_total} for {self.name}")
        return self

    def sizes(self) -> tuple[int, int, int]:
        """(train, val, test) sample counts after defaults are applied."""
        if self.name == "synthetic_patterns":
            val = self.val_size or 0
            test = self.test_size or 6000
            train = self.train_size or ((self.n_data - val - test) if self.n_data else 15000)
            return train, val, test
        n_train_total, n_test_total = IDX_SIZES[self.name]
        val = 12000 if self.val_size is None else self.val_size
        train = self.train_size or n_train_total - val
        return train, val, self.test_size or n_test_total

    @property
    def num_classes(self) -> int:
        if self.name == "synthetic_patterns":
            return self.n_classes
        return len(IDX_CLASS_NAMES[self.name])

    @property
    def num_features(self) -> int:
        return self.n_dim if self.name == "synthetic_patterns" else 784

    def class_names(self) -> list[str]:
        if self.name == "synthetic_patterns":
            return [f"class {c}" for c in range(self.n_classes)]
        return IDX_CLASS_NAMES[self.name]


class ModelSpec(Strict):
    depth: Annotated[int, Field(gt=0, le=MAX_DEPTH)] = 1
    width: PositiveInt | list[PositiveInt] = 100
    activation: Literal["relu", "sigmoid", "linear"] = "relu"
    bias: Literal["all", "first", "none"] = "all"
    output_bias: bool = True
    init: Literal["he", "lecun_uniform", "torch_default"] = "torch_default"
    init_gain: Annotated[float, Field(gt=0.0)] = 1.0
    summary_width: PositiveInt | None = None
    batch_norm: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if isinstance(self.width, list) and len(self.width) != self.depth:
            raise ValueError(
                f"width lists {len(self.width)} layers but depth is {self.depth}; "
                "give one width per hidden layer or a single int"
            )
        return self

    def hidden_widths(self) -> list[int]:
        """Widths of every hidden layer, the summary layer (if any) last."""
        widths = list(self.width) if isinstance(self.width, list) else [self.width] * self.depth
        if self.summary_width:
            widths.append(self.summary_width)
        return widths


class LrSchedule(Strict):
    milestones: list[Annotated[float, Field(gt=0)]] = []
    factor: Annotated[float, Field(gt=0)] = 0.1


class Optimiser(Strict):
    name: Literal["adam", "sgd", "layca"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    layca_base: Literal["sgd", "adam"] = "sgd"
    schedule: LrSchedule = LrSchedule()

    @property
    def base(self) -> str:
        """The rule that makes the step: Layca's base, else the optimiser itself."""
        return self.layca_base if self.name == "layca" else self.name


class EarlyStopping(Strict):
    patience: PositiveInt = 10
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class Training(Strict):
    loss: Literal["mse", "ce", "bce"] = "ce"
    batch_size: PositiveInt | Literal["full"] = 64
    epochs: PositiveInt = 10
    seed: Seed = 0
    until_train_accuracy: Probability | None = None
    early_stopping: EarlyStopping | None = None
    eval_chunk: PositiveInt = 4096
    # float64 keeps long chaotic runs (e.g. full-batch Layca) identical alone and stacked
    dtype: Literal["float32", "float64"] = "float32"


class Noise(Strict):
    input_sigma_train: Annotated[float, Field(ge=0)] = 0.0
    input_sigma_test: Annotated[float, Field(ge=0)] = 0.0
    label_fraction: Probability = 0.0


class LogSpaced(Strict):
    start: Annotated[float, Field(gt=0)]
    stop: Annotated[float, Field(gt=0)]
    num: Annotated[int, Field(ge=2)]

    @model_validator(mode="after")
    def _check(self) -> LogSpaced:
        if self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be larger than start ({self.start})")
        return self


class Checkpoints(Strict):
    initial: bool = True
    final: bool = True
    log: LogSpaced | None = None
    every: Annotated[float, Field(gt=0)] | None = None
    at: list[Annotated[float, Field(ge=0)]] = []
    first_epoch_every_step: bool = False
    # Store every member's parameters: true (at every checkpoint), "final" (the trained
    # network only) or a list of checkpoint epochs. The final network is always stored.
    weights: bool | Literal["final"] | list[Annotated[float, Field(ge=0)]] = False


class CurvesProbe(Strict):
    splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]


class ActivationFractionProbe(Strict):
    split: Literal["train", "val", "test", "auto"] = "auto"
    # a node is on when z > 0 (relu, linear) or sigmoid(z) > threshold (default 0.5)
    threshold: SigmoidThreshold | None = None
    # also the output nodes (output_activation_fraction): on when z > 0 for mse and bce
    # outputs, when the softmax probability exceeds 1/K for ce
    output_layer: bool = False


class SampleSetsProbe(ActivationFractionProbe):
    churn: bool = True
    node_cost: bool = True


class PatternPreactivationProbe(Strict):
    split: Literal["train", "val", "test"] = "test"


class GradSignProbe(Strict):
    top_k: PositiveInt = 10  # neurons of the last hidden layer, ranked by |output weight|


class DifficultyProbe(Strict):
    pass


class NoiseRobustnessProbe(Strict):
    sigma_test: list[Annotated[float, Field(ge=0)]] = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5]
    n_samples: PositiveInt | None = None  # synthetic: samples per test set (default test_size)


class ActivationGapsProbe(Strict):
    """Activation and weight gaps of the 2-node summary layer (activation gap paper)."""

    split: Literal["train", "val", "test"] = "test"
    n_samples: PositiveInt = 300  # correctly classified samples; all their cross-class pairs
    n_misclassified: NonNegativeInt = 50  # misclassified samples, paired with all the others
    seed: Seed = 0

    def check_model(self, spec: Spec) -> None:
        """The gap conditions need exactly this architecture; one line says why not."""
        m = spec.model
        checks = [
            (m.summary_width != 2, "needs model.summary_width = 2 (the 2-node summary layer)"),
            (
                m.output_bias,
                "needs model.output_bias = false: with an output bias the gap conditions "
                "(Eqs. 9-18) no longer decide the classification",
            ),
            (m.activation != "relu", "needs activation = 'relu' (the gap conditions use a >= 0)"),
            (m.batch_norm, "needs batch_norm = false (weight normalisation does not fold it)"),
            (spec.training.loss == "bce", "needs one output per class: use loss = 'ce'"),
            (
                spec.data.sizes()[("train", "val", "test").index(self.split)] == 0,
                f"reads the {self.split} split, which is empty; choose another split",
            ),
        ]
        for failed, reason in checks:
            if failed:
                raise ValueError(f"probe activation_gaps {reason}")


class CooperatingProbe(Strict):
    """Shared options of the cooperating-classifiers probes."""

    # a node is on when z > 0 (relu, linear) or sigmoid(z) > threshold (default 0.5)
    threshold: SigmoidThreshold | None = None
    # "checkpoints": at every checkpoint; "best": once, on the network early stopping restored
    at: Literal["checkpoints", "best"] = "checkpoints"

    def check_model(self, spec: Spec, name: str, splits: list[str]) -> None:
        if self.at == "best" and not spec.training.early_stopping:
            raise ValueError(
                f"probe {name} at = 'best' needs training.early_stopping (it measures the "
                "network with the lowest validation error); set it or use at = 'checkpoints'"
            )
        for split in splits:
            if spec.data.sizes()[("train", "val", "test").index(split)] == 0:
                raise ValueError(f"probe {name} reads the {split} split, which is empty")


class PerplexityProbe(CooperatingProbe):
    """Pattern entropy and perplexity per layer and class (cooperating classifiers, Eqs. 1-2)."""

    split: Literal["train", "val", "test"] = "test"


class NodeClassifiersProbe(CooperatingProbe):
    """Layers as naive-Bayes classifiers of their nodes (cooperating classifiers, Sec. 5.1)."""

    splits: list[Literal["train", "val", "test"]] = ["train", "test"]  # scored; fitted on train
    bandwidth: Literal["scott", "silverman"] = "scott"


class Probes(Strict):
    """Probes to record. A table (even empty) switches a probe on with those options;
    `curves` is on unless set to false."""

    curves: CurvesProbe | Literal[False] = CurvesProbe()
    activation_fraction: ActivationFractionProbe | None = None
    sample_sets: SampleSetsProbe | None = None
    pattern_preactivation: PatternPreactivationProbe | None = None
    grad_sign: GradSignProbe | None = None
    difficulty: DifficultyProbe | None = None
    noise_robustness: NoiseRobustnessProbe | None = None
    activation_gaps: ActivationGapsProbe | None = None
    perplexity: PerplexityProbe | None = None
    node_classifiers: NodeClassifiersProbe | None = None

    def enabled(self) -> list[tuple[str, BaseModel]]:
        return [(name, opts) for name, opts in self if opts]


class Device(Strict):
    type: Literal["auto", "cpu", "cuda"] = "auto"
    max_group_size: PositiveInt | None = None
    # Device memory (GB) one stacked group may use; larger groups are split into member
    # chunks by an estimate of the memory per member (spec/size.py)
    memory_budget_gb: Annotated[float, Field(gt=0)] | None = None
    # Refuse plans beyond these (estimates, spec/size.py): a typo in a grid should not
    # fill a disk or a device; raise them for runs that really are this large
    max_result_gb: Annotated[float, Field(gt=0)] = 100.0
    max_memory_gb: Annotated[float, Field(gt=0)] = 64.0


class Resume(Strict):
    # Save the training state at the end of an epoch once this many epochs (0: never by
    # epochs) or minutes (0: never by time) have passed since the last save; a re-run
    # continues from it. Both 0: a group interrupted mid-training starts again.
    every_epochs: NonNegativeInt = 0
    every_minutes: Annotated[float, Field(ge=0)] = 10.0


class Spec(Strict):
    experiment: Experiment
    data: Data
    model: ModelSpec = ModelSpec()
    optimiser: Optimiser = Optimiser()
    training: Training = Training()
    noise: Noise = Noise()
    checkpoints: Checkpoints = Checkpoints()
    probes: Probes = Probes()
    sweep: dict[str, list | list[list[str]]] = {}
    device: Device = Device()
    resume: Resume = Resume()

    @model_validator(mode="after")
    def _check(self) -> Spec:
        if self.training.loss == "bce" and self.data.num_classes != 2:
            raise ValueError(
                f"loss 'bce' needs 2 classes but {self.data.name} has {self.data.num_classes}; "
                "use loss = 'ce'"
            )
        if self.probes.noise_robustness and "data.sigma_test" in self.sweep:
            raise ValueError(
                "noise_robustness sets its own test noise levels (its sigma_test list); "
                "do not also sweep data.sigma_test"
            )
        train, val, _ = self.data.sizes()
        if self.training.early_stopping and val == 0:
            raise ValueError("early_stopping needs a validation split: set data.val_size > 0")
        if self.probes.activation_gaps:
            self.probes.activation_gaps.check_model(self)
        if self.probes.perplexity:
            self.probes.perplexity.check_model(self, "perplexity", [self.probes.perplexity.split])
        if self.probes.node_classifiers:
            nc = self.probes.node_classifiers
            nc.check_model(self, "node_classifiers", ["train", *nc.splits])
        return self

    def batch_size(self) -> int:
        train = self.data.sizes()[0]
        bs = self.training.batch_size
        return train if bs == "full" else min(bs, train)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.sizes()[0] / self.batch_size())
