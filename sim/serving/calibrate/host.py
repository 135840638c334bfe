"""The measuring host: CPU model, cores, and the slug that names its profile."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

# Cloud VMs often hide the full model name ("AMD EPYC"); family/model numbers still tell the
# microarchitecture. (vendor, family, model) -> codename; sources: AMD and Intel model tables.
_CODENAMES: dict[tuple[str, int, int], str] = {
    ("AuthenticAMD", 23, 1): "naples",
    ("AuthenticAMD", 23, 49): "rome",
    ("AuthenticAMD", 25, 1): "milan",
    ("AuthenticAMD", 25, 17): "genoa",
    ("AuthenticAMD", 26, 2): "turin",
    ("GenuineIntel", 6, 63): "haswell",
    ("GenuineIntel", 6, 79): "broadwell",
    ("GenuineIntel", 6, 85): "skylake-or-cascadelake",
    ("GenuineIntel", 6, 106): "icelake",
    ("GenuineIntel", 6, 143): "sapphirerapids",
    ("GenuineIntel", 6, 207): "emeraldrapids",
}


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """What /proc/cpuinfo and the scheduler say about this machine's CPU."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    vendor = fields.get("vendor_id", platform.processor() or "unknown")
    model_name = fields.get("model name") or platform.processor() or platform.machine()
    info: dict[str, Any] = {"model_name": model_name, "vendor": vendor}
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        family = model = -1
    else:
        info["family"], info["model"] = family, model
        codename = _CODENAMES.get((vendor, family, model))
        if codename:
            info["codename"] = codename
    if "flags" in fields:
        flags = set(fields["flags"].split())
        info["simd"] = [f for f in ("avx", "avx2", "fma", "avx512f", "amx_tile") if f in flags]
        info["hypervisor"] = "hypervisor" in flags
    info["logical_cpus"] = os.cpu_count() or 1
    info["usable_cpus"] = len(usable_cpus())
    cores = {
        (line.split(":")[1].strip()) for line in cpuinfo.splitlines() if line.startswith("core id")
    }
    if cores:
        info["threads_per_core"] = max(1, info["logical_cpus"] // max(1, len(cores)))
    info["platform"] = platform.platform()
    return info


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def slug(info: dict[str, Any]) -> str:
    """``amd-epyc-milan``, ``intel-xeon-platinum-8273cl``: the CPU part of a profile name."""
    name = str(info.get("model_name", "cpu"))
    name = re.sub(r"\((R|TM|tm|r)\)", " ", name)
    name = re.sub(r"@.*$", " ", name)
    name = re.sub(r"\b(CPU|Processor|\d+-Core)\b", " ", name, flags=re.IGNORECASE)
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    codename = info.get("codename")
    if codename and codename not in words:
        words = f"{words}-{codename}" if words else str(codename)
    return words or "cpu"
