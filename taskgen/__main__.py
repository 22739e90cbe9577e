"""Generate tasks: ``python -m toolgym.taskgen --seed 0 --count 1000 --out tasks.jsonl``.

Writes JSONL records (ToolUse, or FunctionCall with ``--function-call``) and prints the
generation rate, the rejections and the question-type x scaling-operation table to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from toolgym.taskgen.generator import GenerationReport, generate, single_step_tasks
from toolgym.taskgen.stats import stats


def main(argv: list[str] | None = None) -> int:
    """The command line above; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m toolgym.taskgen", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", default="-", help="JSONL output file ('-' for stdout)")
    parser.add_argument("--function-call", action="store_true",
                        help="FunctionCall records instead of ToolUse")
    args = parser.parse_args(argv)

    report = GenerationReport()
    make = single_step_tasks if args.function_call else generate
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    summary: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for record in make(args.seed, args.count, report=report):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            summary.append({"question_type": record.get("question_type"), "scaling": record.get("scaling")})
    finally:
        if out is not sys.stdout:
            out.close()
    elapsed = time.perf_counter() - start
    rate = report.kept / max(elapsed, 1e-9)
    print(f"{report.kept} tasks in {elapsed:.1f} s ({rate:.0f} tasks/s); {report.attempted} attempts, "
          f"rejected {report.rejected_total}: {report.rejected}", file=sys.stderr)
    if not args.function_call:
        print(stats(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
