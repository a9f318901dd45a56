"""`python -m bench <name> [--json]`: run one benchmark and print its figures."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {"upload": "bench.upload", "ratelimit": "bench.ratelimit", "latency": "bench.latency",
              "scale": "bench.scale", "read": "bench.read", "walk": "bench.walk",
              "rollback": "bench.rollback", "pagecache": "bench.pagecache", "soak": "bench.soak",
              "cluster": "bench.cluster", "serve": "bench.serve", "prefetch": "bench.prefetch"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--mib", type=int, default=None, help="backlog size in MiB (default: the benchmark's own)")
    # A benchmark with options of its own adds them (`soak --segments N`).
    name = next((a for a in sys.argv[1:] if a in BENCHMARKS), None)
    module = importlib.import_module(BENCHMARKS[name]) if name else None
    if module is not None and hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args()
    module = importlib.import_module(BENCHMARKS[args.name])
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
