"""Device identity in one place: a normalized, filesystem-safe slug per physical device.

Every backend maps its devices onto these ids, so NumPy and PoCL on the same CPU share one id and compete in one
results table: `cpu-<vendor>-<model>-<N>c`, `gpu-<vendor>-<model>-<memory>gb`.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
from typing import Any

_VENDORS = {
    "genuineintel": "intel", "intel(r) corporation": "intel", "intel": "intel",
    "authenticamd": "amd", "advanced micro devices, inc.": "amd", "amd": "amd",
    "nvidia corporation": "nvidia", "nvidia": "nvidia", "arm": "arm", "apple": "apple",
}
# Marketing noise that varies between drivers reporting the same chip.
_NOISE = re.compile(r"\((r|tm)\)|\b(cpu|processor|corporation|inc|core|with|radeon graphics)\b|@.*$|\d+-core",
                    re.IGNORECASE)


def slug(text: str) -> str:
    """Lower-case, alphanumerics and single dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def normalize_vendor(vendor: str) -> str:
    v = vendor.strip().lower()
    return _VENDORS.get(v, slug(v.split()[0]) if v.split() else "unknown")


def device_id(kind: str, vendor: str, model: str, units: int | None = None, memory_gb: int | None = None) -> str:
    """The one place device ids are built. `units` is the core count for CPUs; `memory_gb` for GPUs."""
    vendor_slug = normalize_vendor(vendor)
    model = _NOISE.sub(" ", model)
    if memory_gb:  # the memory goes at the end, once
        model = re.sub(r"\b\d+\s*gb\b|\bhbm\w*|\bpcie\b|\bsxm\w*", " ", model, flags=re.IGNORECASE)
    model_slug = slug(model) or "unknown"
    # Avoid "intel-intel-xeon": drop the vendor name repeated at the front of the model.
    if model_slug.startswith(vendor_slug + "-"):
        model_slug = model_slug[len(vendor_slug) + 1:]
    parts = [kind, vendor_slug, model_slug]
    if units:
        parts.append(f"{units}c")
    if memory_gb:
        parts.append(f"{memory_gb}gb")
    return slug("-".join(parts))


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str | int]:
    """Vendor, model and core count of this machine's CPU, read once."""
    vendor, model = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "model name" and not model:
                    model = value.strip()
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    if not vendor:
        vendor = model.split()[0] if model.split() else "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"vendor": vendor, "model": model, "cores": cores}


def cpu_device_id() -> str:
    """This CPU's id, e.g. `cpu-intel-xeon-2c`."""
    info = cpu_info()
    return device_id("cpu", str(info["vendor"]), str(info["model"]), int(info["cores"]))


def cpu_device_name() -> str:
    info = cpu_info()
    return f"{info['model']} ({info['cores']} cores)"


# The OpenCL CPU runtime whose devices keep the CPU's own id (so numpy and it compete in one table); any other
# runtime on the same CPU (Intel's, Oclgrind's simulator) gets the CPU's id plus its platform, so measurements of two
# runtimes never mix in one table.
DEFAULT_CPU_RUNTIME = "pocl"
_RUNTIME_SLUGS = {"portable-computing-language": "pocl", "oclgrind": "oclgrind"}


def runtime_slug(platform_name: str) -> str:
    """A short slug of an OpenCL platform's name (`pocl`, `oclgrind`, `intel-opencl`)."""
    s = slug(re.sub(r"\((r|tm)\)", " ", platform_name, flags=re.IGNORECASE))
    return _RUNTIME_SLUGS.get(s, s[:40].strip("-") or "unknown")


def opencl_cpu_device_id(platform_name: str, cpu_id: str | None = None) -> str:
    """The device id of an OpenCL CPU device: this CPU's id under the default runtime (PoCL), else the CPU's id
    followed by the runtime's slug (`cpu-amd-epyc-2c-oclgrind`)."""
    base = cpu_id or cpu_device_id()
    runtime = runtime_slug(platform_name)
    return base if runtime == DEFAULT_CPU_RUNTIME else f"{base}-{runtime}"


@functools.lru_cache(maxsize=1)
def cpu_features() -> dict[str, Any]:
    """What this CPU says about itself, for device-aware defaults: `flags` (the ISA extensions of interest that
    /proc/cpuinfo lists: avx, avx2, fma, avx512f, neon/asimd, ...), `simd_bits` (the widest float vectors: 512 with
    AVX-512, 256 with AVX/AVX2, 128 otherwise), `float_lanes` (simd_bits / 32), `registers` (vector registers: 32
    with AVX-512 or on AArch64, else 16), `cores`, and `l2_bytes` / `l3_bytes` (per cache instance, from sysfs;
    0 when unknown). Read once; every field has a safe value where the OS says nothing."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    machine = platform.machine().lower()
    interesting = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "asimd",
                   "neon", "sve"}
    found = sorted(flags & interesting)
    if "avx512f" in flags:
        bits, registers = 512, 32
    elif "avx" in flags or "avx2" in flags:
        bits, registers = 256, 16
    else:
        bits, registers = 128, 32 if machine in ("aarch64", "arm64") else 16
    caches = {2: 0, 3: 0}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            try:
                with open(f"{base}/{entry}/level") as f:
                    level = int(f.read().strip())
                with open(f"{base}/{entry}/size") as f:
                    size = f.read().strip().upper()
            except (OSError, ValueError):
                continue
            scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
            digits = size.rstrip("KM")
            if level in caches and digits.isdigit():
                caches[level] = max(caches[level], int(digits) * scale)
    except OSError:
        pass
    return {"flags": found, "simd_bits": bits, "float_lanes": bits // 32, "registers": registers,
            "cores": int(cpu_info()["cores"]), "l2_bytes": caches[2], "l3_bytes": caches[3]}


def parse_device_id(dev_id: str) -> dict[str, Any]:
    """The parts of a device id: kind, vendor, model tokens, and `units` (CPU cores, `Nc`) or `memory_gb`
    (`Ngb`) where the id ends with them."""
    parts = dev_id.split("-")
    kind, vendor = (parts + ["", ""])[:2]
    rest = parts[2:]
    out: dict[str, Any] = {"kind": kind, "vendor": vendor, "units": None, "memory_gb": None}
    if rest and re.fullmatch(r"\d+c", rest[-1]):
        out["units"] = int(rest.pop()[:-1])
    elif rest and re.fullmatch(r"\d+gb", rest[-1]):
        out["memory_gb"] = int(rest.pop()[:-2])
    out["model"] = tuple(rest)
    return out


# device_distance(): what it costs to differ in each part
DISTANCE_VENDOR = 4.0
DISTANCE_MODEL = 2.0  # scaled by the share of model tokens that differ
DISTANCE_LANES = 2.0  # per factor of two in SIMD float lanes, where both are known


def device_distance(a: str, b: str, lanes_a: int | None = None, lanes_b: int | None = None) -> float | None:
    """How unlike two devices are, for borrowing one's tuned configs on the other: None when their kinds differ
    (a CPU never borrows from a GPU); else vendor differs 4, plus 2 x the share of model tokens not in common
    (`xeon` vs `epyc` 2, `xeon-gold` vs `xeon-platinum` 1), plus |log2| of the core count (CPUs) or memory
    (GPUs) ratio, plus 2 x |log2| of the SIMD float lanes ratio where both are known (this CPU's from
    `cpu_features()` when `a` is this CPU and no lanes are given). 0 for the same id."""
    if a == b:
        return 0.0
    pa, pb = parse_device_id(a), parse_device_id(b)
    if pa["kind"] != pb["kind"]:
        return None
    d = 0.0 if pa["vendor"] == pb["vendor"] else DISTANCE_VENDOR
    ma, mb = set(pa["model"]), set(pb["model"])
    if ma | mb:
        d += DISTANCE_MODEL * len(ma ^ mb) / len(ma | mb)
    for key in ("units", "memory_gb"):
        if pa[key] and pb[key]:
            d += abs(math.log2(pa[key] / pb[key]))
    if lanes_a is None and a == cpu_device_id():
        lanes_a = int(cpu_features()["float_lanes"])
    if lanes_a and lanes_b:
        d += DISTANCE_LANES * abs(math.log2(lanes_a / lanes_b))
    return round(d, 6)
