"""Isolated OpenCL driver probing: each installed driver (ICD) is first probed in a subprocess with a time limit, so
that a driver whose platform query segfaults or never returns costs that driver only, never the caller.

`python -m backends.opencl.probe` (run with `OCL_ICD_VENDORS` naming one `.icd` file) enumerates that driver's
platforms and devices and builds and runs a trivial kernel on each, as the backend does in-process; exit status 0
means it answered. The parent (`usable_icds`) probes each driver once per process and remembers the verdict on disk
(`$AUTOTUNE_CACHE`, else a per-user cache directory), keyed by the driver's `.icd` file and its library's size and
modification time (its version), so a crashing driver is not re-run on every start and an updated one is probed
again. The in-process loader is then pointed at the drivers that answered (an `OCL_ICD_VENDORS` directory of their files
in the cache, shared by every process) before pyopencl first asks for platforms.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

TIMEOUT_ENV = "AUTOTUNE_OPENCL_PROBE_TIMEOUT"
CACHE_ENV = "AUTOTUNE_CACHE"
DEFAULT_TIMEOUT_S = 30.0
# The trivial kernel every device must build and run (here and in the backend's own in-process check).
TRIVIAL = "__kernel void probe(__global float* a) { a[get_global_id(0)] += 1.0f; }"
_ROOT = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_verdicts: dict[str, str | None] = {}  # driver key -> None (answered) or why not, for this process


def icd_files() -> list[Path] | None:
    """The driver files the ICD loader would read, or None when they cannot be isolated (OCL_ICD_FILENAMES)."""
    if os.environ.get("OCL_ICD_FILENAMES"):
        return None
    env = os.environ.get("OCL_ICD_VENDORS")
    where = Path(env) if env else Path("/etc/OpenCL/vendors")
    if where.is_file():
        return [where]
    return sorted(where.glob("*.icd")) if where.is_dir() else []


def _driver_key(icd: Path) -> str:
    """The ICD file, the library it names, and that library's size and modification time (its version)."""
    try:
        library = icd.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        library = ""
    stamp = ""
    if library.startswith("/"):
        try:
            st = os.stat(library)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
    return f"{icd.resolve()}|{library}|{stamp}"


def _cache_file() -> Path:
    base = os.environ.get(CACHE_ENV)
    if not base:
        import platformdirs
        base = platformdirs.user_cache_dir("convt-autotune")
    return Path(base) / "opencl-probe.json"


def _load_cache() -> dict[str, str | None]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and (v is None or isinstance(v, str))}


def _save_cache(entries: dict[str, str | None]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".opencl-probe.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**_load_cache(), **entries}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs a probe next time


def probe_icd(icd: Path, timeout_s: float) -> str | None:
    """Probe one driver in a subprocess: None if it answered, else why not (crashed, hung, failed)."""
    env = {**os.environ, "OCL_ICD_VENDORS": str(icd),
           "PYTHONPATH": os.pathsep.join([str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("OCL_ICD_FILENAMES", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "backends.opencl.probe"], env=env, capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"driver {icd.name} did not answer within {timeout_s:g} s (hung while probing; {TIMEOUT_ENV})"
    except OSError as exc:
        return f"driver {icd.name} could not be probed ({exc})"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"driver {icd.name} crashed while probing ({name})"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["exit status " + str(proc.returncode)])[-1]
        return f"driver {icd.name} failed while probing: {tail[:300]}"
    return None


def usable_icds() -> tuple[list[Path] | None, list[tuple[str, str]]]:
    """(the drivers that answered, or None when not isolated; (driver, reason) for each that did not). Each driver
    is probed once per process, and once per version on disk."""
    files = icd_files()
    if files is None:
        return None, []
    timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    good: list[Path] = []
    bad: list[tuple[str, str]] = []
    with _lock:
        stored = _load_cache()
        new: dict[str, str | None] = {}
        for icd in files:
            key = _driver_key(icd)
            if key not in _verdicts:
                if key in stored:
                    _verdicts[key] = stored[key]
                else:
                    _verdicts[key] = why = probe_icd(icd, timeout)
                    if why is None or "failed while probing" not in why:
                        new[key] = why  # a crash, a hang or an answer is kept on disk; an ordinary failure is not
            why = _verdicts[key]
            if why is None:
                good.append(icd)
            else:
                bad.append((icd.name, why))
        if new:
            _save_cache(new)
    return good, bad


def restrict_loader(good: list[Path]) -> None:
    """Point this process's ICD loader at `good` drivers only (before its first platform query): a directory of
    their `.icd` files in the cache directory, named by their contents, so every process with the same drivers
    shares one (made once, atomically) instead of leaving a temporary directory behind each."""
    files = {f"{i:02d}-{icd.name}": icd.read_bytes() for i, icd in enumerate(good)}
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    d = _cache_file().parent / f"icd-{digest}"
    if not d.is_dir():
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=".icd-"))
        except OSError:  # no writable cache: a private temporary directory, removed at exit
            tmp = d = Path(tempfile.mkdtemp(prefix="autotune-icd-"))
            atexit.register(shutil.rmtree, d, True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if tmp != d:
            try:
                tmp.rename(d)
            except OSError:  # another process made it first: theirs has the same contents
                shutil.rmtree(tmp, ignore_errors=True)
    os.environ["OCL_ICD_VENDORS"] = str(d)


def main() -> int:
    """The subprocess side: enumerate, build and run a trivial kernel on every device of the drivers given."""
    import numpy as np
    import pyopencl as cl

    for plat in cl.get_platforms():
        for handle in plat.get_devices():
            try:
                ctx = cl.Context([handle])
                queue = cl.CommandQueue(ctx)
                prog = cl.Program(ctx, TRIVIAL).build()
                buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                                hostbuf=np.zeros(4, np.float32))
                prog.probe(queue, (4,), None, buf).wait()
            except Exception:  # an ordinary failure is reported in-process, with the driver's own words
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
