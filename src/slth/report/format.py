"""Markdown helpers shared by the experiments' report sections: provenance line, percentages, tables."""

from __future__ import annotations

from typing import Any

def provenance(data: dict[str, Any]) -> str:
    bits = [f"machine: {data.get('machine', 'not recorded')}"]
    if data.get("machine_note"):
        bits.append(data["machine_note"])
    bits.append(f"date: {data.get('date', 'not recorded')}")
    if isinstance(data.get("wall_seconds"), (int, float)):
        bits.append(f"whole run {data['wall_seconds'] / 60:.1f} min wall")
    if data.get("git_commit"):
        bits.append(f"commit {data['git_commit']}")
    cmd = data.get("command")
    return "*" + "; ".join(bits) + ".*" + (f" Command: `{cmd}`" if cmd else "")


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "|" + "|".join("---" for _ in header) + "|"
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

