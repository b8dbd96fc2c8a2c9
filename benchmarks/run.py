"""Run every benchmark and write benchmarks/RESULTS.md.

Usage (from the repository root, with the `bench` extra installed)::

    python -m benchmarks.run            # the full run (several minutes)
    python -m benchmarks.run --quick    # a smoke run with smaller counts
    python -m benchmarks.run stack cache  # only some sections

Each section measures klayengo and its baseline in the same process run and reports
medians, spreads and ratios; see benchmarks/README.md.
"""

from __future__ import annotations

import datetime
import importlib
import sys
import time
import traceback
from pathlib import Path

from ._common import Target, machine, summary, take_targets

SECTIONS = ["stack", "cache", "breaker", "ratelimit", "retry", "metrics", "scale", "redis"]
RESULTS = Path(__file__).with_name("RESULTS.md")
#: Hand-written before/after figures of the profiling work, appended to RESULTS.md.
PROFILING_NOTES = Path(__file__).with_name("PROFILING.md")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quick = "--quick" in args
    chosen = [a for a in args if not a.startswith("-")] or SECTIONS
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {SECTIONS}")
        return 2
    import klayengo

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks.run{' --quick' if quick else ''}` on {started}. "
        "Every ratio compares klayengo with its baseline measured in the same process run. "
        "Times are per operation: median over the repeats, with the spread (min-max of the "
        "repeats) in parentheses.",
        "",
        "## Machine",
        "",
        machine().replace("klayengo not installed", f"klayengo {klayengo.__version__}"),
        "",
    ]
    machine_at = len(parts) - 4  # the summary goes before "## Machine"
    failed = 0
    targets: list[Target] = []
    take_targets()  # start clean
    for name in chosen:
        module_name = f"benchmarks.bench_{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        print(f"running {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            parts.append(module.run(quick=quick))
        except Exception:
            failed += 1
            parts.append(f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}```")
            take_targets()  # a partial section states nothing
            targets.append(Target(name, "the whole section", "runs", "FAILED (see below)", False))
        else:
            targets += take_targets()
        parts.append("")
        print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    where = [
        "## Where we stand",
        "",
        "Every target of every section, as measured in this run (details and spreads in "
        "the sections below; `info` rows have no pass/fail target).",
        "",
        summary(targets),
        "",
    ]
    parts[machine_at:machine_at] = where
    if PROFILING_NOTES.exists():
        parts.append(PROFILING_NOTES.read_text())
    text = "\n".join(parts).rstrip() + "\n"
    if set(chosen) == set(SECTIONS):
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    else:
        print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
