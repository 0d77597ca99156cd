"""`autotune report` on a small results fixture: the HTML parses, every embedded image is a decodable PNG,
every section is there, the table numbers are the fixture's; empty, partial and mixed-version results give
clear messages and exit 0."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autotune import report
from autotune.cli import report as cli_report
from autotune.core import results
from autotune.core.problem import Problem
from autotune.explain import phase_decomposition
from autotune.report import analysis as report_analysis

P1 = Problem.make(N=1, C_in=4, H=8, W=8, C_out=4, kH=4, kW=4, stride=2, padding=1)
P2 = Problem.make(N=2, C_in=3, H=5, W=5, C_out=2, kH=3, kW=3, stride=2, padding=(1, 0), output_padding=1)
DEV_A, DEV_B = "cpu-test-alpha-2c", "gpu-test-beta-8gb"


def _row(device: str, backend: str, op: str, p: Problem, trial: int | None, status: str, time_s: float | None,
         config: dict | None = None, default: bool = False, reason: str = "", study: str | None = None,
         schema: int = results.SCHEMA_VERSION, version: str = "0.1.0") -> dict:
    q = p.for_op(op)
    return {**results.problem_columns(q), "device": device, "device_name": f"Test {device}", "backend": backend,
            "op": op, "config": json.dumps(config or {}), "status": status, "time_s": time_s,
            "gflops": q.flops(op) / time_s / 1e9 if time_s else None, "max_abs_err": 0.0 if time_s else None,
            "timestamp": f"2026-11-20T10:00:{trial or 0:02d}Z", "reason": reason,
            "study": study if study is not None else (f"{device}/{backend}/{op}/{q.key}" if backend != "torch" else ""),
            "trial": trial, "is_default": int(default), "backend_version": f"{backend} 1.{len(backend)}",
            "autotune_version": version, "reps": 5}


# The numpy forward study on device A: 12 trials, enough for Optuna's importance; ALG decides the time.
NUMPY_A = [({"ALG": "gemm" if i % 2 else "gather", "TILE": (8, 16, 32)[i % 3]},
            (1.0 if i % 2 else 3.0) * 1e-3 * (1 + 0.01 * i)) for i in range(12)]


def write_fixture(d: Path) -> dict:
    rows = [_row(DEV_A, "numpy", "forward", P1, i, "ok", t, c, default=(i == 0)) for i, (c, t) in enumerate(NUMPY_A)]
    rows.append(_row(DEV_A, "numpy", "forward", P1, 12, "build_error", None, {"ALG": "gemm", "TILE": 64},
                     reason="tile 64 exceeds the limit"))
    opencl = [(0, "ok", 2e-3, {"WG": 64}), (1, "wrong_answer", None, {"WG": 128}), (2, "ok", 0.5e-3, {"WG": 32}),
              (3, "timeout", None, {"WG": 256})]
    rows += [_row(DEV_A, "opencl", "forward", P1, i, s, t, c, reason="" if s == "ok" else f"{s} here")
             for i, s, t, c in opencl]
    rows.append(_row(DEV_A, "torch", "forward", P1, None, "baseline", 0.8e-3))
    rows += [_row(DEV_A, "numpy", "backward_input", P1, 0, "out_of_resources", None, {"ALG": "gemm"}, default=True,
                  reason="too big"),
             _row(DEV_A, "numpy", "backward_input", P1, 1, "ok", 4e-3, {"ALG": "gather"}),
             _row(DEV_A, "numpy", "backward_input", P1, 2, "ok", 2e-3, {"ALG": "direct"})]
    results.append_rows(results.device_file(d, DEV_A), rows)
    rows_b = [_row(DEV_B, "numpy", "forward", P1, i, "ok", t, {"ALG": a}, default=(i == 0), version="0.2.0")
              for i, (a, t) in enumerate([("gemm", 0.4e-3), ("gather", 0.3e-3), ("direct", 0.5e-3)])]
    rows_b += [_row(DEV_B, "opencl", "forward", P2, i, "crash", None, {"WG": 8}, reason="segfault", version="0.2.0")
               for i in range(2)]
    results.append_rows(results.device_file(d, DEV_B), rows_b)
    # A row from a future version (schema N + 1): format_row always writes today's schema, so edit the last field.
    line = results.format_row(_row(DEV_B, "numpy", "forward", P2, 0, "ok", 1e-3, {}))
    assert line.endswith(f",{results.SCHEMA_VERSION}\n")
    with open(results.device_file(d, DEV_B), "a", encoding="utf-8") as f:
        f.write(line[:-len(f",{results.SCHEMA_VERSION}\n")] + f",{results.SCHEMA_VERSION + 1}\n")
    return {"rows_a": rows, "rows_b": rows_b}


class Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.texts: list[str] = []
        self._cell: list[str] | None = None
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._stack.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag in ("img", "meta", "br", "hr", "link"):   # void elements have no end tag
            self._stack.pop()
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        assert self._stack and self._stack[-1] == tag, f"unbalanced </{tag}> after {self._stack[-3:]}"
        self._stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell or []))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        self.texts.append(data)


def _parse(text: str) -> Parsed:
    p = Parsed()
    p.feed(text)
    p.close()
    assert p._stack == [], p._stack
    return p


def _table_with(parsed: Parsed, header: list[str]) -> list[list[str]]:
    for t in parsed.tables:
        if t and t[0][:len(header)] == header:
            return t
    raise AssertionError(f"no table with header {header}")


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_report.add_arguments(parser)
    return cli_report.run(parser.parse_args(list(argv)))


def _need_matplotlib() -> None:
    if os.environ.get("CI") == "true":
        import matplotlib  # noqa: F401  (in CI a missing plotting library is a failure)
    else:
        pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[str, str, Path]:
    _need_matplotlib()
    d = tmp_path_factory.mktemp("results")
    write_fixture(d)
    out = d / "out" / "report.html"
    buf = io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(buf):
        assert _cli("--results", str(d), "-o", str(out)) == 0
    return out.read_text(encoding="utf-8"), buf.getvalue(), d


def test_html_parses_and_images_decode(generated) -> None:
    text, _, _ = generated
    parsed = _parse(text)
    assert "http://" not in text and "https://" not in text   # self-contained
    assert len(parsed.images) >= 6
    from PIL import Image
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.size[0] > 50 and im.size[1] > 50


def test_every_section_present(generated) -> None:
    parsed = _parse(generated[0])
    for dev in (DEV_A, DEV_B):
        assert f"device-{dev}" in parsed.ids
        for s in report.SECTIONS:
            assert f"{s}-{dev}" in parsed.ids
    for s in ("notes", "comparison", "explain"):
        assert s in parsed.ids


def test_best_table_numbers(generated) -> None:
    parsed = _parse(generated[0])
    table = _table_with(parsed, ["problem", "op", "numpy", "opencl", "torch (baseline)", "fastest"])
    rows = {(r[0], r[1]): r for r in table[1:]}
    fwd = rows[(P1.key, "forward")]
    flops = P1.flops("forward")
    best_numpy = flops / min(t for _, t in NUMPY_A) / 1e9
    assert fwd[2] == report.fmt_gflops(best_numpy)
    assert fwd[3] == report.fmt_gflops(flops / 0.5e-3 / 1e9)
    assert fwd[4] == report.fmt_gflops(flops / 0.8e-3 / 1e9)
    assert fwd[5] == "opencl" and fwd[6] == f"{0.8 / 0.5:.2f}"
    bwd = rows[(P1.for_op("backward_input").key, "backward_input")]
    assert bwd[2] == report.fmt_gflops(P1.flops("backward_input") / 2e-3 / 1e9)
    assert bwd[3] == "" and bwd[5] == "numpy"
    # Device B: opencl only failed on P2.
    table_b = [t for t in parsed.tables if t and t[0][:4] == ["problem", "op", "numpy", "opencl"]][1]
    rows_b = {(r[0], r[1]): r for r in table_b[1:]}
    assert rows_b[(P2.key, "forward")][3] == "failed (2)"
    assert rows_b[(P1.key, "forward")][2] == report.fmt_gflops(flops / 0.3e-3 / 1e9)


def test_speedup_convergence_failures(generated) -> None:
    parsed = _parse(generated[0])
    sp = _table_with(parsed, ["study", "backend", "op", "problem", "trials", "ok", "default ms", "best ms",
                              "speed-up"])
    by = {r[0]: r for r in sp[1:]}
    s = by[f"{DEV_A}/numpy/forward/{P1.key}"]
    assert s[4:] == ["13", "12", f"{NUMPY_A[0][1] * 1e3:.3f}", f"{NUMPY_A[1][1] * 1e3:.3f}",
                     f"{NUMPY_A[0][1] / NUMPY_A[1][1]:.2f}"]
    assert by[f"{DEV_A}/opencl/forward/{P1.key}"][6:] == ["", "0.500", ""]
    assert by[f"{DEV_A}/numpy/backward_input/{P1.for_op('backward_input').key}"][6] == "failed (out_of_resources)"
    text = " ".join(parsed.texts)
    assert f"no default-config trial for study {DEV_A}/opencl/forward/{P1.key}, speed-up unknown" in text
    assert "default config failed in study" in text
    conv = _table_with(parsed, ["study", "trials", "ok", "first ok ms", "best ms", "best at trial"])
    row = {r[0]: r for r in conv[1:]}[f"{DEV_A}/opencl/forward/{P1.key}"]
    assert row[1:] == ["4", "2", "2.000", "0.500", "2"]
    fails = _table_with(parsed, ["backend", "op", "status", "count", "example reason"])
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in fails[1:]}
    assert got[("numpy", "forward", "build_error")] == ("1", "tile 64 exceeds the limit")
    assert got[("opencl", "forward", "timeout")] == ("1", "timeout here")
    assert got[("opencl", "forward", "wrong_answer")] == ("1", "wrong_answer here")
    assert got[("numpy", "backward_input", "out_of_resources")] == ("1", "too big")


def test_importance_and_environment(generated) -> None:
    parsed = _parse(generated[0])
    # one named method for every study (issue 14), averaged per backend
    imp = _table_with(parsed, ["parameter", "mean importance", "studies"])
    assert {r[0] for r in imp[1:]} <= {"ALG", "TILE"} and all(0 <= float(r[1]) <= 1 for r in imp[1:])
    text = " ".join(parsed.texts)
    assert f"by one method for every study: the {report_analysis.IMPORTANCE_METHOD}" in text
    assert "PED-ANOVA" not in text
    env = _table_with(parsed, ["backend", "versions (library, driver)", "rows", "ok rows"])
    assert {r[0]: r[1] for r in env[1:]} == {"numpy": "numpy 1.5", "opencl": "opencl 1.6", "torch": "torch 1.5"}
    assert f"1 row(s) of schema {results.SCHEMA_VERSION + 1} ignored" in text
    assert "several autotune versions (0.1.0, 0.2.0)" in text


def test_comparison_and_markdown(generated) -> None:
    text, md, _ = generated
    parsed = _parse(text)
    comp = _table_with(parsed, ["problem", "op", DEV_A, DEV_B])
    row = {(r[0], r[1]): r for r in comp[1:]}[(P1.key, "forward")]
    flops = P1.flops("forward")
    assert row[2:] == [f"{report.fmt_gflops(flops / 0.5e-3 / 1e9)} (opencl)",
                       f"{report.fmt_gflops(flops / 0.3e-3 / 1e9)} (numpy)"]
    assert md.startswith("# ") and "| problem | op | numpy | opencl | torch (baseline) |" in md
    assert f"## Device {DEV_A}" in md and f"1 row(s) of schema {results.SCHEMA_VERSION + 1} ignored" in md
    assert "HTML report with plots" in md


def test_explain_section_for_chosen_layer(generated, tmp_path) -> None:
    _, _, d = generated
    out = tmp_path / "r.html"
    with open(os.devnull, "w") as null:
        import contextlib
        with contextlib.redirect_stdout(null):
            assert _cli("--results", str(d), "-o", str(out), "--layer", P2.key, "--device", DEV_B) == 0
    parsed = _parse(out.read_text())
    assert f"device-{DEV_A}" not in parsed.ids and "explain" in parsed.ids
    text = "".join(parsed.texts)
    counts = ", ".join(str(ph.n_taps) for ph in phase_decomposition(3, 2, P2.padding).phases)
    assert f"Uneven tap counts per phase ({counts})" in text and "phase (1,1)" in text
    with pytest.raises(ValueError, match="--layer"):
        _cli("--results", str(d), "-o", str(out), "--layer", "no_such_layer")


def test_empty_and_missing_results(tmp_path, capsys) -> None:
    _need_matplotlib()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("--results", str(empty), "-o", str(tmp_path / "e.html")) == 0
    md = capsys.readouterr().out
    assert "no results found in" in md
    parsed = _parse((tmp_path / "e.html").read_text())
    assert "notes" in parsed.ids and "explain" in parsed.ids
    # an unknown device is the user's mistake (issue 14): one line, exit status 2, no report written
    from autotune import cli
    assert cli.main(["report", "--results", str(tmp_path / "absent"), "-o", str(tmp_path / "a.html"),
                     "--device", "cpu-x-1c"]) == 2
    assert "--device cpu-x-1c: no results for this device" in capsys.readouterr().err
    assert not (tmp_path / "a.html").exists()


def test_partial_results(tmp_path, capsys) -> None:
    """Only failures and a baseline on one device; one ok row without gflops on another; a truncated last line
    and a file that is not a results file."""
    _need_matplotlib()
    rows = [_row(DEV_A, "opencl", "forward", P1, 0, "build_error", None, {"WG": 8}, reason="no compiler"),
            _row(DEV_A, "torch", "forward", P1, None, "baseline", 1e-3)]
    f = results.device_file(tmp_path, DEV_A)
    results.append_rows(f, rows)
    with open(f, "a") as fh:
        fh.write(f"{DEV_A},Test,numpy,forward")   # a writer killed mid-line
    results.append_rows(results.device_file(tmp_path, DEV_B),
                        [{**_row(DEV_B, "numpy", "forward", P1, 0, "ok", 2e-3, {"ALG": "gemm"}), "gflops": None}])
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    (tmp_path / "out").mkdir()
    assert _cli("--results", str(tmp_path), "-o", str(tmp_path / "out" / "p.html")) == 0
    md = capsys.readouterr().out
    assert f"No ok trial on device {DEV_A}" in md
    assert "could not be used" in md and "missing column" in md and f"{DEV_A}.csv, line 4" in md
    parsed = _parse((tmp_path / "out" / "p.html").read_text())
    text = " ".join(parsed.texts)
    assert "No study has two or more ok trials" in text
    assert f"no default-config trial for study {DEV_B}/numpy/forward/{P1.key}, speed-up unknown" in text
    best_a = _table_with(parsed, ["problem", "op", "opencl", "torch (baseline)"])
    assert best_a[1][2:4] == ["failed (1)", report.fmt_gflops(P1.flops("forward") / 1e-3 / 1e9)]
    best_b = _table_with(parsed, ["problem", "op", "numpy", "fastest"])
    assert best_b[1][2] == report.fmt_gflops(P1.flops("forward") / 2e-3 / 1e9)   # recomputed from time_s
    comp = _table_with(parsed, ["problem", "op", DEV_A, DEV_B])
    assert comp[1][2:] == ["", f"{report.fmt_gflops(P1.flops('forward') / 2e-3 / 1e9)} (numpy)"]


def test_variance_importance() -> None:
    params = [{"A": 1, "B": "x"}, {"A": 2, "B": "x"}, {"A": 1, "B": "y"}, {"A": 2, "B": "y"}]
    imp = report.variance_importance(params, [1.0, 4.0, 1.0, 4.0])
    assert imp == {"A": 1.0, "B": 0.0}


def test_matplotlib_imported_lazily() -> None:
    import subprocess
    import sys
    code = ("import sys, autotune.report, autotune.explain; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True)


_CHECK_JS = """<script>
window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.scroll, pre') && !el.matches('.scroll, pre')) continue;  // inside a scroll box: scrolls
    const r = el.getBoundingClientRect();
    if (r.right > W + 1) bad.push(el.tagName + (el.id ? '#' + el.id : '') + ' right=' + Math.round(r.right));
  }
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) bad.push('image not loaded: ' + img.alt);
  }
  const out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({width: W, images: document.images.length, bad: bad});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    import shutil
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.parametrize("width", [1280, 800])
def test_report_renders_in_a_browser(generated, tmp_path, width) -> None:
    """Issue 14: the page in headless Chromium: no element wider than the page, every image loads."""
    import subprocess

    from conftest import require
    browser = _chromium()
    require(browser is not None, "chromium (Debian's `chromium`, installed by scripts/setup.sh)")
    page = tmp_path / "page.html"
    page.write_text(generated[0].replace("</body>", _CHECK_JS + "</body>"), encoding="utf-8")
    proc = subprocess.run([str(browser), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900",
                           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the check script did not run: " + proc.stdout[-500:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] >= 6 and check["bad"] == [], check
