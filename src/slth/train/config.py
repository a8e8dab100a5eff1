from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch

from .._hparams import METHOD_FIELDS, MethodSettings, TrainSettings
from .._names import VARIANT_NAMES
from ..supermask.methods import METHODS, SupermaskConfig, check_method_settings, unread_settings_dropped
from .runtime import check_device_name, check_precision, check_precision_name

TRAIN_METHODS = ("dense", *METHODS)

# Defaults per method (None in TrainConfig means "take this"). Supermask methods: their METHODS entry
# (slth.supermask.methods, with the reasons for each rate). Dense weights train at 0.01 (SGD + momentum
# on bias-free nets) with Kaiming-normal init.
DEFAULT_LR = {"dense": 0.01, **{name: m.lr for name, m in METHODS.items()}}
DEFAULT_WEIGHT_DECAY = {"dense": 5e-4, **{name: m.weight_decay for name, m in METHODS.items()}}
DEFAULT_INIT = {"dense": "kaiming-normal", **{name: m.init for name, m in METHODS.items()}}


def default(what: str, method: str, variant: str = "slth"):
    """``what`` ("lr", "weight_decay" or "init") of ``method``: the tables above, or with ``variant="reference"``
    the method's reference defaults (its METHODS entry's ``reference``: the reference repository's config)."""
    table = {"lr": DEFAULT_LR, "weight_decay": DEFAULT_WEIGHT_DECAY, "init": DEFAULT_INIT}[what]
    if method == "dense" or variant != "reference":
        return table[method]
    return getattr(METHODS[method].reference, what)

RUNTIME_FIELDS = ("device", "workers")  # change where a run executes, not its results


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """Everything that determines a training run; two runs with equal configs give equal results on the same
    device and number of processes (on the CPU bit for bit).

    ``density`` is the kept fraction of the Linear/Conv2d weights (ignored by ``dense``). ``batch_size`` is
    the global batch, split evenly over the processes of a ``torchrun`` launch. ``device`` and ``workers``
    say where the run executes and are not part of :meth:`identity`: a run may resume elsewhere.
    The fields, their defaults and help texts are declared in :class:`slth._hparams.TrainSettings` (without
    torch, for ``slth train``'s generated options); this class adds the checks and the per-method defaults.
    """

    def __post_init__(self) -> None:
        from ..data import DATASETS, check_data_args
        from ..models import check_model_args

        if self.method not in TRAIN_METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid names: {', '.join(TRAIN_METHODS)}")
        # these refuse an unknown model / data set by name, with the valid names
        object.__setattr__(self, "model_args", check_model_args(self.model, self.model_args or ()))
        object.__setattr__(self, "data_args", check_data_args(self.data, self.data_args or ()))
        if (isinstance(self.density, bool) or not isinstance(self.density, (int, float))
                or not 0.0 < self.density <= 1.0):
            raise ValueError(f"density (kept fraction) must lie in (0, 1], got {self.density!r}")
        if not self.width > 0:
            raise ValueError(f"width multiplier must be > 0, got {self.width}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.workers) < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        check_device_name(self.device)
        check_precision_name(self.precision)
        if self.precision == "fp16" and self.device == "cpu":
            check_precision(torch.device("cpu"), self.precision)
        if self.image_size is not None:
            if DATASETS[self.data].image_size is None:
                raise ValueError(f"image_size applies to image-folder data sets, not to {self.data!r}")
            if int(self.image_size) < 8:
                raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.hidden is not None and self.model != "fc":
            raise ValueError("hidden sizes apply to the fc model only")
        if isinstance(self.coats, list):  # JSON holds the tuple as a list
            object.__setattr__(self, "coats", tuple(self.coats))
        if self.variant not in VARIANT_NAMES:
            raise ValueError(f"unknown supermask variant {self.variant!r}; valid names: {', '.join(VARIANT_NAMES)}")
        if self.method != "dense":
            self.supermask_config()  # validates init, distribution, the source and method hyper-parameters
        elif self.source != "dense":
            raise ValueError(f"source {self.source!r} is the random network a supermask searches; the dense "
                             "method trains every weight (choose a supermask method)")
        else:
            check_method_settings(None, MethodSettings(**self.method_settings()))  # dense reads none of them

    def resolved(self) -> TrainConfig:
        """This config with every ``None`` default replaced by the method's default."""
        return replace(
            self,
            lr=default("lr", self.method, self.variant) if self.lr is None else float(self.lr),
            weight_decay=(default("weight_decay", self.method, self.variant) if self.weight_decay is None
                          else float(self.weight_decay)),
            init=default("init", self.method, self.variant) if self.init is None else self.init,
            augment=self._default_augment() if self.augment is None else self.augment,
            image_size=self._default_image_size() if self.image_size is None else int(self.image_size),
            hidden=None if self.hidden is None else tuple(int(h) for h in self.hidden),
        )

    def _default_augment(self) -> bool:
        from ..data import DATASETS

        return DATASETS[self.data].augment

    def _default_image_size(self) -> int | None:
        from ..data import DATASETS

        return DATASETS[self.data].image_size

    def identity(self) -> dict:
        """What a resumed run must match: every field but where it runs (:data:`RUNTIME_FIELDS`); fields a
        checkpoint predates take their defaults."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def supermask_config(self) -> SupermaskConfig | None:
        if self.method == "dense":
            return None
        return SupermaskConfig(method=self.method, density=float(self.density),
                               init=self.init or default("init", self.method, self.variant),
                               distribution=self.distribution, **self.method_settings())

    def method_settings(self) -> dict:
        """The supermask methods' own settings of this config, by name (slth._hparams.METHOD_FIELDS)."""
        return {name: getattr(self, name) for name in METHOD_FIELDS}

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["hidden"] is not None:
            d["hidden"] = list(d["hidden"])
        d["model_args"] = [list(pair) for pair in d["model_args"]]  # JSON: a list of [key, value]
        d["data_args"] = [list(pair) for pair in d["data_args"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        d = unread_settings_dropped(None if d.get("method") == "dense" else d.get("method"), d)
        if d.get("hidden") is not None:
            d["hidden"] = tuple(d["hidden"])
        if isinstance(d.get("coats"), list):
            d["coats"] = tuple(d["coats"])
        for key in ("model_args", "data_args"):
            if d.get(key) is not None:
                d[key] = tuple(tuple(pair) for pair in d[key])
        return cls(**d)
