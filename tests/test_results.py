"""Results files: whole rows under concurrent appends, rows cut short by a killed writer, untrusted contents, and
unreadable files set aside (never overwritten)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pandas as pd
import pytest

from autotune.core import results
from autotune.core.problem import Problem

P = Problem.make(2, 3, 5, 5, 4, 3, 3, stride=2, padding=1)


def row(i: int = 0, **over: object) -> dict:
    base = {"device": "cpu-test-1c", "device_name": "Test CPU, 1 core", "backend": "numpy", "op": "forward",
            **results.problem_columns(P), "config": '{"algorithm":"phase","batch_block":0}', "status": "ok",
            "time_s": 1e-3 * (i + 1), "gflops": 1.5, "max_abs_err": 1e-7, "timestamp": "2026-11-21T00:00:00Z",
            "reason": None, "trial": i, "is_default": int(i == 0)}
    return {**base, **over}


def test_roundtrip_and_single_header(tmp_path: Path) -> None:
    path = results.device_file(tmp_path, "cpu-test-1c")
    results.append_rows(path, [row(0)])
    results.append_rows(path, [row(1), row(2, status="wrong_answer", time_s=None, reason='bad, "quoted"\nline')])
    text = path.read_text()
    assert text.count("device,device_name") == 1 and text.count("\n") == 4  # header + 3 rows, one line each
    df = results.read_file(path)
    assert len(df) == 3 and list(df.columns) == list(results.COLUMNS)
    assert df["time_s"].tolist()[:2] == [1e-3, 2e-3] and pd.isna(df["time_s"][2])
    assert (df["schema"] == results.SCHEMA_VERSION).all()
    assert df["device_name"][0] == "Test CPU, 1 core" and df["problem"][0] == P.key


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown result column"):
        results.append_rows(tmp_path / "x.csv", [row(0, color="red")])


def test_device_ids_must_be_slugs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slug"):
        results.device_file(tmp_path, "../../etc/passwd")


def test_row_cut_short_by_a_kill_is_dropped_and_the_next_append_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0), row(1)])
    whole = results.format_row(row(2))
    with open(path, "a") as f:  # a writer killed in the middle of its line, here in the time_s field
        f.write(whole[:whole.index("0.003") + 4])
    assert len(pd.read_csv(path)) == 3  # pandas reads it...
    errors: list[str] = []
    df = results.read_file(path, errors)  # ...and the reader drops the partial row, saying where
    assert len(df) == 2 and len(errors) == 1 and "line 4" in errors[0] and "incomplete" in errors[0]
    results.append_rows(path, [row(3)])
    df = results.read_file(path)
    assert df["trial"].tolist() == [0, 1, 3]


def test_foreign_header_is_never_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(results.ResultsFileError, match="line 1"):
        results.append_rows(path, [row(0)])
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_unparsable_line_costs_that_line_only(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0), row(1)])
    with open(path, "ab") as f:
        f.write(("x," * 50 + "\n").encode() + b"\x00\xff\xfe binary\n")
    results.append_rows(path, [row(2)])
    errors: list[str] = []
    assert results.read_file(path, errors)["trial"].tolist() == [0, 1, 2]
    assert len(errors) == 2 and f"{path.name}, line 4" in errors[0] and "line 5" in errors[1]
    assert results.set_aside_if_unreadable(path) is None


def test_torn_row_inside_its_config_costs_that_row_only(tmp_path: Path) -> None:
    """Issue 15, item 1: a row cut 12 characters past its first quote (a crash, a full disk) is dropped with one
    reason naming file and line; the next append ends it with a newline; nothing is set aside."""
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0), row(1)])
    whole = results.format_row(row(2))
    with open(path, "a") as f:
        f.write(whole[:whole.index('"') + 12])
    errors: list[str] = []
    assert results.read_file(path, errors)["trial"].tolist() == [0, 1]
    assert len(errors) == 1 and f"{path}, line 4" in errors[0]
    assert results.set_aside_if_unreadable(path) is None
    results.append_rows(path, [row(3)])
    errors = []
    assert results.read_file(path, errors)["trial"].tolist() == [0, 1, 3] and len(errors) == 1
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("config", ["[" * 100_000, '{"a":' + "9" * 5000 + "}", '{"a":' * 50 + "1" + "}" * 50,
                                    '{"a":"' + "x" * 100_000 + '"}'])
def test_hostile_row_costs_that_row_only(tmp_path: Path, config: str) -> None:
    """Issue 15, item 2: deep nesting, huge integers and huge fields never raise outside the per-row check."""
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0), row(1, config=config), row(2, N="9" * 5000), row(3)])
    errors: list[str] = []
    df = results.read_file(path, errors)
    assert df["trial"].tolist()[0] == 0 and df["trial"].tolist()[-1] == 3 and len(errors) >= 1
    assert all(f"{path}, line " in e for e in errors)


def test_failed_append_leaves_no_torn_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15, item 8: a full disk (ENOSPC) is one clear error, and the partial row is undone."""
    import errno

    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0)])
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(results.os, "fsync", full)
    with pytest.raises(results.ResultsWriteError, match="No space left"):
        results.append_rows(path, [row(1)])
    assert path.read_bytes() == before


def test_read_only_results_dir_is_one_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/autotune-results")  # not creatable, even as root
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "sub"
    with pytest.raises(results.ResultsWriteError, match="--results"):
        results.append_rows(results.device_file(target, "cpu-test-1c"), [row(0)])


@pytest.mark.parametrize("content", [None, "reordered"])
def test_foreign_header_is_set_aside_with_its_good_rows_carried(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    if content is None:  # readable CSV, but not our header: not appendable, so kept aside
        path.write_text("device,status\ncpu-x,ok\n")
    else:  # our columns in another order: the rows read, and are carried into the new file
        cols = list(results.COLUMNS)
        cols[0], cols[1] = cols[1], cols[0]
        text = results.format_row(row(0, device_name="Test CPU"))
        fields = text.rstrip("\n").split(",")
        fields[0], fields[1] = fields[1], fields[0]
        path.write_text(",".join(cols) + "\n" + ",".join(fields) + "\n")
    before = path.read_bytes()
    note = results.set_aside_if_unreadable(path)
    assert note and str(path) in note and "line" in note and "kept aside" in note
    (aside,) = tmp_path.glob("cpu-test-1c.csv.corrupt-*")
    assert aside.read_bytes() == before
    results.append_rows(path, [row(5)])  # a new file is started
    expected = [5] if content is None else [0, 5]
    assert results.read_file(path)["trial"].tolist() == expected
    assert results.read_dirs([tmp_path])["trial"].tolist() == expected  # the kept-aside file is not read


def test_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    results.append_rows(path, [row(1)])
    assert results.read_file(path)["trial"].tolist() == [0, 1]


def test_readable_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    assert results.set_aside_if_unreadable(path) is None  # absent
    results.append_rows(path, [row(0, op="sideways")])  # an invalid row is dropped on reading, not a corrupt file
    assert results.set_aside_if_unreadable(path) is None and path.exists()
    assert list(tmp_path.iterdir()) == [path]


def test_untrusted_values_are_dropped_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    results.append_rows(path, [row(0), row(1, op="sideways"), row(2, status="great"), row(3, problem="n1_evil"),
                               row(4, config="{not json"), row(5, time_s=-1.0), row(6, device="Bad Device"),
                               row(7, N="1.5"), row(8, trial="1e300")])
    errors: list[str] = []
    df = results.read_file(path, errors)
    assert len(df) == 3 and len(errors) == 6
    # A non-integral or huge integer field becomes NA instead of raising.
    assert df["N"].isna().sum() == 1 and df["trial"].isna().sum() == 1
    assert {e.split(": ", 1)[0].rsplit(" ", 1)[-1] for e in errors} == {"3", "4", "5", "6", "7", "8"}


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        results.append_rows(path, [row(worker * 1000 + i)])


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "cpu-test-1c.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    errors: list[str] = []
    df = results.read_file(path, errors)
    assert errors == [] and len(df) == 240 and df["trial"].is_unique
    assert path.read_text().count("device,device_name") == 1


def test_results_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(results.ENV_VAR, str(tmp_path / "env"))
    assert results.results_dir(tmp_path / "arg") == tmp_path / "arg"
    assert results.results_dir() == tmp_path / "env"
    monkeypatch.delenv(results.ENV_VAR)
    assert results.results_dir().name == "results" and os.fspath(results.results_dir()) != "results"


def test_make_row_records_source_threads_and_load() -> None:
    r = results.make_row(device_id="cpu-test-1c", device_name="t", backend="numpy", op="forward", problem=P,
                         config="{}", status="ok", source="bench", time_s=1e-3)
    assert r["source"] == "bench" and r["threads"] >= 1 and r["timestamp"].endswith("Z")
    assert r["load_avg"] is None or r["load_avg"] >= 0
    with pytest.raises(ValueError, match="source"):
        results.make_row(device_id="cpu-test-1c", device_name="t", backend="numpy", op="forward", problem=P,
                         config="{}", status="ok", source="guess")


def _v1_file(path: Path, rows: list[dict]) -> None:
    """A results file as schema 1 wrote it (no source, threads, load_avg; `+0000` timestamps from old bench)."""
    lines = [",".join(results.COLUMNS_V1)]
    for r in rows:
        line = results.format_row(r).rstrip("\n").split(",")
        # format_row writes today's schema: drop source, threads, load_avg, device_time_s and say schema 1
        lines.append(",".join(line[:-5] + ["1"]))
    path.write_text("\n".join(lines) + "\n")


def test_schema_1_files_are_read_and_upgraded_before_an_append(tmp_path: Path) -> None:
    path = results.device_file(tmp_path, "cpu-test-1c")
    _v1_file(path, [row(0, study="s1"), row(1, reason="autotune bench", timestamp="2026-11-21T00:00:00+0000"),
                    row(2, backend="torch", status="baseline", reason="autotune bench")])
    df = results.read_file(path)
    assert df["source"].tolist() == ["tune", "bench", "bench"]
    assert (df["timestamp"] == "2026-11-21T00:00:00Z").all() and df["threads"].isna().all()
    assert results.set_aside_if_unreadable(path) is None  # an old schema is not unreadable
    results.append_rows(path, [{**row(3), "source": "tune", "threads": 2}])
    assert path.read_text().splitlines()[0].split(",") == list(results.COLUMNS)
    df = results.read_file(path)
    assert df["schema"].tolist() == [1, 1, 1, results.SCHEMA_VERSION]
    assert df["source"].tolist() == ["tune", "bench", "bench", "tune"]
    assert df["threads"].tolist()[3] == 2 and df["trial"].tolist() == [0, 1, 2, 3]
    assert not list(tmp_path.glob("*.schema1"))


def test_schema_2_files_are_read_and_upgraded_before_an_append(tmp_path: Path) -> None:
    """Schema 3 adds `device_time_s`: a schema-2 file reads (the column empty) and is upgraded, rows kept."""
    path = results.device_file(tmp_path, "cpu-test-1c")
    lines = [",".join(results.COLUMNS_V2)]
    for r in (row(0, study="s1"), row(1)):
        fields = results.format_row(r).rstrip("\n").split(",")
        lines.append(",".join(fields[:-2] + ["2"]))  # no device_time_s, schema 2
    path.write_text("\n".join(lines) + "\n")
    df = results.read_file(path)
    assert len(df) == 2 and df["device_time_s"].isna().all() and df["time_s"].notna().all()
    assert results.set_aside_if_unreadable(path) is None
    results.append_rows(path, [{**row(2), "device_time_s": 1e-4}])
    assert path.read_text().splitlines()[0].split(",") == list(results.COLUMNS)
    df = results.read_file(path)
    assert df["schema"].tolist() == [2, 2, results.SCHEMA_VERSION] and df["trial"].tolist() == [0, 1, 2]
    assert df["device_time_s"].isna().tolist() == [True, True, False] and df["device_time_s"].iloc[2] == 1e-4
    assert df["source"].tolist()[:2] == ["tune", "tune"] and not list(tmp_path.glob("*.schema2"))


def test_make_row_records_device_time_beside_the_call_time() -> None:
    r = results.make_row(device_id="cpu-test-1c", device_name="t", backend="opencl", op="forward", problem=P,
                         config="{}", status="ok", source="tune", time_s=2e-3, device_time_s=1e-3)
    assert r["time_s"] == 2e-3 and r["device_time_s"] == 1e-3 and r["gflops"] == P.flops("forward") / 2e-3 / 1e9
    assert results.make_row(device_id="cpu-test-1c", device_name="t", backend="numpy", op="forward", problem=P,
                            config="{}", status="ok", source="tune", time_s=2e-3)["device_time_s"] is None
