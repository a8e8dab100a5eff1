"""The settings machinery of ``slth experiment``: options from dataclass fields, presets, the generic runner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slth.cli import _settings
from slth.experiments.settings import check_names, option, with_preset


@dataclasses.dataclass(frozen=True)
class Example:
    count: int = option(3, "a count")
    rate: float | None = option(None, "a rate")
    name: str = option("a")
    on: bool = option(True)
    where: Path | None = option(None)
    ns: tuple[int, ...] = option((1, 2))
    xs: tuple[float, ...] = option((0.5,))
    words: tuple[str, ...] = option(("x", "y"))
    args: dict[str, str] = option({"k": "v"})

    def __post_init__(self):
        check_names(self.words, "words", ("x", "y", "z"))


def test_given_parses_only_what_the_user_gave():
    values = {f.name: None for f in dataclasses.fields(Example)}
    values.update(ns="4,5", xs="0.1", words="z", args="a=1,b=2", on=False)
    assert _settings.given(Example, values) == {"ns": (4, 5), "xs": (0.1,), "words": ("z",),
                                                "args": {"a": "1", "b": "2"}, "on": False}


def test_every_field_becomes_an_option():
    names = [p.name for p in _settings.parameters(Example)]
    assert names == [f.name for f in dataclasses.fields(Example)]


def test_an_unsupported_field_type_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        xs: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="no command-line form"):
        _settings.parameters(Bad)


def test_a_preset_applies_where_the_user_gave_nothing():
    presets = {"quick": {"count": 1, "ns": (7,)}}
    s = with_preset(Example, "quick", presets, ns=(9,))
    assert (s.count, s.ns) == (1, (9,))
    assert with_preset(Example, None, presets) == Example()
    with pytest.raises(ValueError, match="unknown preset"):
        with_preset(Example, "slow", presets)
    with pytest.raises(ValueError, match="unknown --words w"):
        with_preset(Example, None, presets, words=("w",))


def test_the_methods_own_settings_have_one_default_each():
    """300 / 0.1 / 1e-4 / "slth" live in slth._hparams.MethodSettings; SupermaskConfig, TrainConfig and the
    options of slth train take them from there."""
    from slth._hparams import DEFAULTS, MethodSettings
    from slth.supermask import SupermaskConfig
    from slth.train import TrainConfig

    params = {p.name: p.default for p in _settings.parameters(MethodSettings)}
    for f in dataclasses.fields(MethodSettings):
        value = getattr(DEFAULTS, f.name)
        assert getattr(SupermaskConfig(), f.name) == getattr(TrainConfig(), f.name) == value
        assert params[f.name].show_default == _settings.shown(value)


@pytest.mark.parametrize("bad", [{"rerand_period": 0}, {"rerand_prob": 1.5}, {"score_l2": -1.0},
                                 {"variant": "paper"}])
def test_method_settings_refuse_bad_values(bad):
    from slth._hparams import MethodSettings
    from slth.supermask import SupermaskConfig

    with pytest.raises(ValueError):
        MethodSettings(**bad)
    with pytest.raises(ValueError):
        SupermaskConfig(**bad)
