"""A description of the machine a benchmark ran on, printed beside its figures."""

from __future__ import annotations

import os
import platform


def describe() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": memory, "kernel": platform.release(),
            "python": platform.python_version()}


def save_result(name: str, result: dict, as_json: bool) -> bool:
    """Write bench/results/NAME.json; print the document when --json. Returns True when the
    caller should print its table instead."""
    import json
    from pathlib import Path

    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result, indent=1))
    if as_json:
        print(json.dumps(result, indent=1))
    return not as_json
