"""Device identity in one place: a normalized, filesystem-safe slug per physical device.

Every backend maps its devices onto these ids, so NumPy and PoCL on the same CPU share one id and compete in one
results table: `cpu-<vendor>-<model>-<N>c`, `gpu-<vendor>-<model>-<memory>gb`.
"""

from __future__ import annotations

import functools
import os
import platform
import re

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
