"""What every experiment's ``Settings`` is made of: fields with help text, name checks, named presets.

Each experiment module defines one frozen dataclass ``Settings`` (every field has a default, a type among
int, float, str, bool, ``Optional[...]``, :class:`~pathlib.Path`, tuples of numbers or names, or
``dict[str, str]``; its help text in the field's metadata) that checks itself in ``__post_init__``, and a dict
``PRESETS`` of named overrides (``"quick"``: the tiny setting the tests run). ``slth experiment <name>``
builds its options from the fields (:mod:`slth.cli._settings`), and the record stores
``dataclasses.asdict(settings)`` as its settings (:func:`slth.experiments.record.run_experiment`), so a
record's settings are exactly what ran. Error messages name a field by its option (``--data-dir``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "") -> Any:  # noqa: A002 (click's word)
    """A settings field: its default and the help text of its command-line option (a dict default is copied)."""
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def flag(name: str) -> str:
    """The command-line option of a field: ``data_dir`` -> ``--data-dir``."""
    return "--" + name.replace("_", "-")


def check_names(values: Iterable[str], name: str, valid: Iterable[str] | None = None) -> None:
    """``values`` must be non-empty and, where ``valid`` is given, each one of ``valid``."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{flag(name)} is empty")
    if valid is not None:
        valid = tuple(valid)
        bad = [v for v in values if v not in valid]
        if bad:
            raise ValueError(f"unknown {flag(name)} {', '.join(bad)}; valid: {', '.join(valid)}")


def check_at_least(settings: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value < minimum:
            raise ValueError(f"{flag(name)} must be >= {minimum:g}, got {value}")


def with_preset(cls: type, preset: str | None, presets: dict[str, dict[str, Any]], **given: Any) -> Any:
    """``cls`` from its defaults, then the named preset's values, then ``given`` (explicit choices win)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(presets) or 'none'}")
        values.update(presets[preset])
    values.update(given)
    return cls(**values)
