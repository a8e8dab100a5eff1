"""Command-line options from a settings dataclass: one typer option per field, its help text the field's.

Types: int, float, str, bool (``--name/--no-name``), ``Optional[X]``, :class:`~pathlib.Path`, tuples of ints,
floats or names (given as comma lists, ``--eps 0.1,0.01``) and ``dict[str, str]`` (``KEY=VALUE,...``). Every
option's value is None unless the user gives it (the help shows the field's default), so :func:`given` passes
on only the user's choices and a preset's values apply where the user gave nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import shlex
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import CommandError, floats, ints


def _unwrap(tp: Any) -> Any:
    """The type inside ``Optional[...]``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def shown(value: Any) -> str:
    """A default as the user would type it."""
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def parameters(cls: type, panel: str | None = None) -> list[inspect.Parameter]:
    """One keyword parameter with a ``typer.Option`` per field of the dataclass ``cls`` (in help panel
    ``panel``); a field whose metadata says ``cli=False`` gets none (the command writes its option by hand)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        tp, default = _unwrap(hints[f.name]), _default(f)
        decl = "--" + f.name.replace("_", "-")
        if f.metadata.get("flag"):  # a repeatable KEY=VALUE option: --model-arg patch=7 --model-arg depth=2
            option = typer.Option(None, f.metadata["flag"], metavar="KEY=VALUE", help=f.metadata.get("help", ""),
                                  rich_help_panel=panel)
            out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                                         default=option))
            continue
        if tp is bool:
            decls, annotation = (f"{decl}/--no-{decl[2:]}",), Optional[bool]
        elif tp in (int, float, str, Path):
            decls, annotation = (decl,), Optional[tp]
        elif typing.get_origin(tp) in (tuple, dict):
            decls, annotation = (decl,), Optional[str]
        else:
            raise TypeError(f"{cls.__qualname__}.{f.name}: no command-line form for {tp!r}")
        show = False if default is dataclasses.MISSING or default is None else shown(default)
        option = typer.Option(None, *decls, help=f.metadata.get("help", ""), show_default=show,
                              rich_help_panel=panel)
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return out


def _parse(tp: Any, text: Any, what: str) -> Any:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is dict:
        return key_values(text, what)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if item is int:
            return tuple(ints(text, what))
        if item is float:
            return tuple(floats(text, what))
        return tuple(t.strip() for t in text.split(",") if t.strip())
    return text


def given(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The fields the user gave (not None), converted to their types (comma lists parsed, KEY=VALUE pairs
    split)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if values.get(f.name) is None:
            continue
        if f.metadata.get("flag"):
            out[f.name] = pairs(values[f.name], f.metadata["flag"])
        else:
            out[f.name] = _parse(hints[f.name], values[f.name], "--" + f.name.replace("_", "-"))
    return out


def pairs(items: list[str], option: str) -> tuple[tuple[str, str], ...]:
    """``["patch=7", "depth=4"]`` -> (("patch", "7"), ("depth", "4")); the model (or data set) checks keys and
    values."""
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise CommandError(f"{option} takes KEY=VALUE (e.g. {'context=32' if 'data' in option else 'patch=7'}), "
                               f"got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def with_signature(fn: Callable, params: list[inspect.Parameter]) -> Callable:
    """``fn(**values)`` with the signature typer reads its options from."""
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}  # typer reads the types from here
    return fn


def key_values(text: str, what: str) -> dict[str, str]:
    """``"patch=7,depth=4"`` -> {"patch": "7", "depth": "4"} (the model registry converts and checks values)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CommandError(f"{what} must be comma-separated KEY=VALUE pairs, got {part!r}")
        if key.strip() in out:
            raise CommandError(f"{what}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


def command_with_dir(argv: list[str], options: tuple[str, ...]) -> str:
    """The command line with the values of ``options`` (data folders) shown as DIR, as every record does."""
    args, hide = [], False
    for a in argv:
        if hide:
            args.append("DIR")
            hide = False
            continue
        name, eq, _ = a.partition("=")
        if name in options:
            if eq:
                args.append(f"{name}=DIR")
            else:
                args.append(a)
                hide = True
            continue
        args.append(a)
    return "slth " + " ".join(a if a.endswith("DIR") else shlex.quote(a) for a in args)


def folder_options(cls) -> tuple[str, ...]:
    """Options naming data folders (``Path`` fields called ``*_dir`` or ``*_root``): shown as DIR in records."""
    return tuple("--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)
                 if f.name.endswith(("_dir", "_root")))
