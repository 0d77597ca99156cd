"""On-disk cache of OpenCL program binaries: a shape seen before costs no compiler run, in any later process.

An entry is keyed by the device (platform, vendor, name, device and driver version), the kernel source's hash and
the build options (the `-D` defines, which carry the config and the problem sizes), and lives in
`$AUTOTUNE_CACHE/opencl-binaries` (else the per-user cache directory). Each file holds a header (magic, its own
key, the binary's SHA-256) and the binary the driver returned (`program.get_info(BINARIES)`); entries are written
atomically (temporary file, then rename), so concurrent tuner workers never see half a file. Reading trusts
nothing: a file whose magic, key or digest does not match (torn, corrupt, another device's, tampered) is deleted
and the program is built from source; the driver is only ever handed bytes it produced itself. The directory is
kept under `$AUTOTUNE_OPENCL_CACHE_MB` (default 256; 0 disables the cache), least recently used entries out first.

PoCL's own kernel cache (`POCL_KERNEL_CACHE`, on by default; pyopencl defers to it on PoCL) does the same for
PoCL when it is enabled and writable; this one also covers drivers without a cache of their own, is bounded, and
counts what it saves. The backend stores a program after its first run: on PoCL the binary then also holds the
kernels compiled for the launch's work-group sizes (the first enqueue's code generation).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

MAGIC = b"convt-autotune opencl binary 1\n"
CACHE_ENV = "AUTOTUNE_CACHE"
LIMIT_ENV = "AUTOTUNE_OPENCL_CACHE_MB"
DEFAULT_LIMIT_MB = 256
SUFFIX = ".clbin"
_STALE_TEMP_S = 3600  # a temporary file this old was left by a killed writer


def directory() -> Path:
    base = os.environ.get(CACHE_ENV)
    if not base:
        import platformdirs
        base = platformdirs.user_cache_dir("convt-autotune")
    return Path(base) / "opencl-binaries"


def limit_bytes() -> int:
    """The directory's size bound; 0 disables the cache (also for a malformed value: never guess)."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_LIMIT_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        return 0
    return int(mb * (1 << 20)) if mb > 0 else 0


def key(device: str, source: str, options: list[str]) -> str:
    """The entry's key: SHA-256 over the device fingerprint, the source's hash and the build options."""
    text = "\0".join([device, hashlib.sha256(source.encode()).hexdigest(), *options])
    return hashlib.sha256(text.encode()).hexdigest()


def _path(k: str) -> Path:
    return directory() / f"{k}{SUFFIX}"


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def load(k: str) -> bytes | None:
    """The binary stored under key `k`, or None (absent, unreadable, or not a valid entry for this key: then
    deleted, so the next build replaces it)."""
    if limit_bytes() <= 0:
        return None
    path = _path(k)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + 64 + 1 + 64 + 1
    binary = data[head:]
    ok = (len(data) > head and data.startswith(MAGIC)
          and data[len(MAGIC):len(MAGIC) + 64] == k.encode()
          and data[len(MAGIC) + 65:head - 1] == hashlib.sha256(binary).hexdigest().encode())
    if not ok:
        _discard(path)
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
    return binary


def store(k: str, binary: bytes) -> bool:
    """Write the entry atomically; then keep the directory under its bound. Never raises (a cache that cannot
    be written only costs a build next time)."""
    limit = limit_bytes()
    if limit <= 0 or not binary or len(binary) > limit // 4:
        return False
    folder = directory()
    data = MAGIC + k.encode() + b"\n" + hashlib.sha256(binary).hexdigest().encode() + b"\n" + binary
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, _path(k))
        except BaseException:
            _discard(Path(tmp))
            raise
    except OSError:
        return False
    evict(limit)
    return True


def evict(limit: int) -> None:
    """Delete least recently used entries until the directory holds at most three quarters of `limit` (when it
    holds more than `limit`), and temporary files left by killed writers."""
    entries = []
    now = time.time()
    try:
        with os.scandir(directory()) as it:
            for e in it:
                try:
                    st = e.stat()
                except OSError:
                    continue
                if e.name.startswith(".tmp-"):
                    if now - st.st_mtime > _STALE_TEMP_S:
                        _discard(Path(e.path))
                elif e.name.endswith(SUFFIX):
                    entries.append((st.st_mtime, st.st_size, e.path))
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    for _, size, path in sorted(entries):
        if total <= limit * 3 // 4:
            break
        _discard(Path(path))
        total -= size


def discard(k: str) -> None:
    """Delete the entry under key `k` (the driver refused it)."""
    _discard(_path(k))
