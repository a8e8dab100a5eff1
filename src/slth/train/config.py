from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..supermask.methods import METHODS, SupermaskConfig

TRAIN_METHODS = ("dense", *METHODS)

# Defaults per method (None in TrainConfig means "take this"). Supermask methods: their METHODS entry
# (slth.supermask.methods, with the reasons for each rate). Dense weights train at 0.01 (SGD + momentum
# on bias-free nets) with Kaiming-normal init.
DEFAULT_LR = {"dense": 0.01, **{name: m.lr for name, m in METHODS.items()}}
DEFAULT_WEIGHT_DECAY = {"dense": 5e-4, **{name: m.weight_decay for name, m in METHODS.items()}}
DEFAULT_INIT = {"dense": "kaiming-normal", **{name: m.init for name, m in METHODS.items()}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; two runs with equal configs give equal results.

    ``density`` is the kept fraction of the Linear/Conv2d weights (ignored by ``dense``).
    """

    method: str = "edge-popup"
    model: str = "fc"
    data: str = "digits"
    data_dir: str | None = None
    density: float = 0.5
    width: float = 1.0
    epochs: int = 10
    seed: int = 0
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    init: str | None = None
    distribution: str = "uniform"
    normalize: bool = True
    augment: bool | None = None  # random crop + flip; default on for cifar10 only
    hidden: tuple[int, ...] | None = None  # fc hidden sizes before the width multiplier
    rerand_period: int = 300
    rerand_prob: float = 0.1
    score_l2: float = 1e-4

    def __post_init__(self) -> None:
        from ..data import DATASETS
        from ..models import MODELS

        if self.method not in TRAIN_METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid names: {', '.join(TRAIN_METHODS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid names: {', '.join(sorted(MODELS))}")
        if self.data not in DATASETS:
            raise ValueError(f"unknown dataset {self.data!r}; valid names: {', '.join(sorted(DATASETS))}")
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density (kept fraction) must lie in (0, 1], got {self.density!r}")
        if not self.width > 0:
            raise ValueError(f"width multiplier must be > 0, got {self.width}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden is not None and self.model != "fc":
            raise ValueError("hidden sizes apply to the fc model only")
        if self.method != "dense":
            self.supermask_config()  # validates init, distribution and method hyper-parameters

    def resolved(self) -> "TrainConfig":
        """This config with every ``None`` default replaced by the method's default."""
        return replace(
            self,
            lr=DEFAULT_LR[self.method] if self.lr is None else float(self.lr),
            weight_decay=DEFAULT_WEIGHT_DECAY[self.method] if self.weight_decay is None else float(self.weight_decay),
            init=DEFAULT_INIT[self.method] if self.init is None else self.init,
            augment=(self.data == "cifar10") if self.augment is None else self.augment,
            hidden=None if self.hidden is None else tuple(int(h) for h in self.hidden),
        )

    def supermask_config(self) -> SupermaskConfig | None:
        if self.method == "dense":
            return None
        return SupermaskConfig(method=self.method, density=float(self.density),
                               init=self.init or DEFAULT_INIT[self.method], distribution=self.distribution,
                               rerand_period=self.rerand_period, rerand_prob=self.rerand_prob, score_l2=self.score_l2)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["hidden"] is not None:
            d["hidden"] = list(d["hidden"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        d = dict(d)
        if d.get("hidden") is not None:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)
