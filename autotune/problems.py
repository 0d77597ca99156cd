"""Problem files: CSV with one named layer per row (the format of the shipped suite, `autotune/data/suite.csv`).

Columns: name,N,C_in,H,W,C_out,kH,kW,stride,padding,output_padding,dilation,groups,bias[,dtype]. stride, padding,
output_padding and dilation are an int, or `a:b` for (height, width); padding may also be `t:b:l:r`
(asymmetric). The file is untrusted: every row is validated and an error names the file, line and column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from autotune.core.errors import MissingFileError, UserError
from autotune.core.problem import Problem

REQUIRED = ("name", "N", "C_in", "H", "W", "C_out", "kH", "kW", "stride", "padding", "output_padding", "dilation",
            "groups", "bias")
MAX_ROWS = 10_000


@dataclass(frozen=True)
class NamedProblem:
    name: str
    problem: Problem


def _int(text: str, where: str) -> int:
    t = text.strip()
    if not (t.isdigit() or (t.startswith("-") and t[1:].isdigit())) or len(t) > 9:
        raise UserError(f"{where}: expected an integer, got {text!r}")
    return int(t)


def _ints(text: str, where: str, allowed: tuple[int, ...]) -> tuple[int, ...]:
    parts = text.strip().split(":")
    if len(parts) not in allowed:
        raise UserError(f"{where}: expected {' or '.join(str(n) for n in allowed)} integer(s) separated by ':', "
                         f"got {text!r}")
    return tuple(_int(p, where) for p in parts)


def parse_row(row: dict[str, str], where: str) -> NamedProblem:
    name = (row.get("name") or "").strip()
    if not name or len(name) > 100 or not all(ch.isalnum() or ch in "_-." for ch in name):
        raise UserError(f"{where}: column 'name' must be 1-100 letters, digits, '_', '-' or '.', got {name!r}")
    f = {k: _int(row[k], f"{where}, column '{k}'") for k in ("N", "C_in", "H", "W", "C_out", "kH", "kW", "groups")}

    def pair(k: str) -> int | tuple[int, int]:
        v = _ints(row[k], f"{where}, column '{k}'", (1, 2))
        return v[0] if len(v) == 1 else (v[0], v[1])

    pad = _ints(row["padding"], f"{where}, column 'padding'", (1, 2, 4))
    padding = pad[0] if len(pad) == 1 else (pad if len(pad) == 2 else ((pad[0], pad[1]), (pad[2], pad[3])))
    bias_text = row["bias"].strip().lower()
    if bias_text not in ("0", "1", "true", "false"):
        raise UserError(f"{where}, column 'bias': expected 0 or 1, got {row['bias']!r}")
    dtype = (row.get("dtype") or "float32").strip()
    pairs: dict[str, Any] = {k: pair(k) for k in ("stride", "output_padding", "dilation")}
    try:
        problem = Problem.make(**f, **pairs, padding=padding, bias=bias_text in ("1", "true"), dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{where} ({name}): {exc}") from None
    return NamedProblem(name, problem)


def load_problems(path: str | Path | None = None) -> list[NamedProblem]:
    """The problems of a CSV file, or the built-in suite when `path` is None."""
    if path is None:
        text = resources.files("autotune").joinpath("data/suite.csv").read_text(encoding="utf-8")
        source = "built-in suite"
    else:
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"problems file {str(p)!r} does not exist")
        try:
            text = p.read_text(encoding="utf-8-sig")  # a BOM (spreadsheet exports) is tolerated
        except UnicodeDecodeError:
            raise UserError(f"problems file {str(p)!r} is not UTF-8 text") from None
        source = str(p)
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED)}")
    out: list[NamedProblem] = []
    seen: set[str] = set()
    for i, row in enumerate(reader, start=2):
        where = f"{source}, line {i}"
        if None in row or any(row[k] is None for k in REQUIRED):
            raise UserError(f"{where}: wrong number of fields")
        if i - 1 > MAX_ROWS:
            raise UserError(f"{source}: more than {MAX_ROWS} problems")
        named = parse_row(row, where)
        if named.name in seen:
            raise UserError(f"{where}: duplicate problem name {named.name!r}")
        seen.add(named.name)
        out.append(named)
    if not out:
        raise UserError(f"{source}: no problems in the file")
    return out


def select(problems: list[NamedProblem], names: list[str] | None) -> list[NamedProblem]:
    """The problems named in `names` (all when None), in file order; an unknown name is an error."""
    if not names:
        return problems
    known = {p.name for p in problems}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown problem name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [p for p in problems if p.name in set(names)]
