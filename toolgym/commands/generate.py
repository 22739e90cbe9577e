r"""``toolgym generate``: make tool-use tasks with FTRL's five-stage pipeline, as JSONL.

    toolgym generate --seed 1 --count 10000 --out tasks.jsonl
    toolgym generate --seed 1 --count 5000 --function-call --out fc.jsonl
    toolgym generate --seed 1 --count 1000 --verify-sandbox auto --out tasks.jsonl
    TOOLGYM_LLM_API_KEY=... toolgym generate --llm-base-url http://host:8001/v1 --llm-model NAME \
        --count 100 --out llm.jsonl

The default is the deterministic procedural generator (``toolgym.taskgen``): the same
seed writes the same bytes. Every task is self-verified before it is written; with
``--verify-sandbox`` every kept task's reference solution is run once more in real
sandboxes (many tasks per sandbox, each call a fresh process, ``--sandboxes`` of them in
parallel), and a task that fails there is dropped and replaced. With ``--llm-base-url`` an
LLM drives the stages (``toolgym.taskgen.llm``) and the sandbox check is mandatory,
since the model's code must never run in this process.

A progress bar goes to stderr when it is a terminal; at the end the command prints the rate,
the rejections by reason and the table of question types x scaling operations (to stdout, or
stderr when the records go to stdout or ``--json`` is given: then stdout carries one JSON
document, the same summary). The output file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import IO, Any

from toolgym.commands._cli import Progress, emit_json, show_progress

__all__ = ["add_parser", "run"]

_VERIFY_CHOICES = ("none", "process", "docker", "auto")


def add_parser(sub: Any) -> None:
    """Register the ``generate`` subcommand and its options on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "generate", help="generate verified tool-use tasks (FTRL's pipeline) as JSONL",
        description="Generate verified tool-use tasks with FTRL's five-stage pipeline.")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default 0)")
    p.add_argument("--count", type=int, default=100, help="tasks to write (default 100)")
    p.add_argument("--out", required=True, help="JSONL file to write ('-' for stdout)")
    p.add_argument("--function-call", action="store_true",
                   help="write toolgym/FunctionCall-v0 records (single-turn questions, gold calls)")
    p.add_argument("--verify-sandbox", choices=_VERIFY_CHOICES, default=None,
                   help="run every task's reference solution in real sandboxes before writing it "
                        "(default: none; auto, and never none, with --llm-base-url)")
    p.add_argument("--sandboxes", type=int, default=2, help="sandboxes verifying in parallel (default 2)")
    p.add_argument("--sandbox-image", default="toolgym-sandbox:latest", help="image of docker sandboxes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true",
                   help="write the summary (written, splits, rejections, rate) as one JSON document to stdout;"
                        " the table goes to stderr")
    llm = p.add_argument_group("LLM-driven stages (any OpenAI-compatible endpoint; key from TOOLGYM_LLM_API_KEY)")
    llm.add_argument("--llm-base-url", default=None, help="e.g. http://127.0.0.1:8001/v1")
    llm.add_argument("--llm-model", default=None, help="model name the endpoint serves")
    llm.add_argument("--llm-timeout-s", type=float, default=120.0, help="per request (default 120)")
    llm.add_argument("--llm-attempts", type=int, default=3, help="requests per stage call (default 3)")
    llm.add_argument("--llm-workers", type=int, default=4, help="tasks built at once (default 4)")
    llm.add_argument("--llm-cache", default=None, help="JSONL reply cache: a rerun replays it byte for byte")
    p.set_defaults(run=run)


def _fail(message: str, code: int = 2) -> int:
    print(f"toolgym generate: {message}", file=sys.stderr)
    return code


# --- sandboxes -------------------------------------------------------------------------------

class _Sandboxes:
    """A few sandboxes of one backend, shared as one ``Runner``: a call takes any free sandbox.

    Each call is a fresh process in its sandbox, so any sandbox will do.

    They come from the server's own ``SandboxPool`` (no warm fill: all are made at once), so
    they carry the server's labels (an episode id each, owner ``generate``, this run's
    instance) and limits (``Settings.sandbox_spec``), and are cleaned up the same way. A
    sandbox that fails is replaced under its episode id and the call retried once; a second
    failure propagates.
    """

    OWNER = "generate"

    def __init__(self, choice: str, image: str, size: int) -> None:
        from toolgym.server.sandbox.pool import SandboxPool
        from toolgym.server.sandbox.select import select_backend
        from toolgym.server.settings import Settings

        self.instance = f"toolgym-generate-{os.getpid()}"
        settings = Settings(backend=choice, sandbox_image=image, instance_id=self.instance)  # type: ignore[arg-type]
        self.backend = select_backend(settings)
        self.size = size
        self._pool = SandboxPool(self.backend, settings.sandbox_spec, size=0, replica=f"gen{os.getpid()}")
        self._free: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._all: dict[str, Any] = {}
        self._lock = threading.Lock()
        try:
            with ThreadPoolExecutor(max_workers=size) as pool:
                for pair in pool.map(lambda _: self._acquire(), range(size)):
                    self._free.put(pair)
        except BaseException:
            self.close()
            raise

    def _acquire(self) -> tuple[str, Any]:
        episode_id, box = self._pool.acquire(self.OWNER)
        with self._lock:  # recorded at once, so close() finds it even if a sibling failed
            self._all[episode_id] = box
        return episode_id, box

    def _replace(self, episode_id: str, box: Any) -> Any:
        box.close()
        fresh = self._pool.replace(episode_id, self.OWNER)
        with self._lock:
            self._all[episode_id] = fresh
        return fresh

    def __call__(self, request: Any) -> Any:
        from toolgym.errors import SandboxError

        episode_id, box = self._free.get()
        try:
            try:
                return box.run(request)
            except SandboxError:
                box = self._replace(episode_id, box)
                return box.run(request)
        finally:
            self._free.put((episode_id, box))

    def close(self) -> None:
        """Close every sandbox, then remove whatever this run's instance still owns, then the backend.

        Removing by instance is what the server does at shutdown.
        """
        self._pool.stop()
        with self._lock:
            boxes, self._all = list(self._all.values()), {}
        for box in boxes:
            box.close()
        self.backend.remove_owned(self.instance)
        self.backend.close()


def _verified(source: Iterator[dict[str, Any]], count: int, sandboxes: _Sandboxes, tally: dict[str, Any],
              batch_size: int = 40) -> Iterator[dict[str, Any]]:
    """``source``'s records that pass ``verify_in_sandbox``, in order, until ``count``.

    Batches are verified in parallel threads while the main thread generates the next;
    no more records are drawn than could still be needed, so a run without sandbox
    rejections draws exactly ``count``.
    """
    from toolgym.taskgen.verify import verify_in_sandbox

    def check(batch: list[dict[str, Any]]) -> Any:
        return verify_in_sandbox(batch, sandboxes)

    pending: deque[tuple[int, Future[Any]]] = deque()
    in_flight = yielded = 0
    executor = ThreadPoolExecutor(max_workers=sandboxes.size, thread_name_prefix="toolgym-verify")
    try:
        while yielded < count:
            while len(pending) < 2 * sandboxes.size and yielded + in_flight < count:
                batch = list(islice(source, min(batch_size, count - yielded - in_flight)))
                if not batch:
                    break
                pending.append((len(batch), executor.submit(check, batch)))
                in_flight += len(batch)
            if not pending:
                return
            size, future = pending.popleft()
            in_flight -= size
            result = future.result()
            tally["tasks"] += size
            tally["calls"] += result.calls
            for rejection in result.rejected:
                tally["rejected"][rejection.code] += 1
                tally["examples"].setdefault(rejection.code, f"{rejection.id}: {rejection.reasons[0]}")
            for record in result.kept:
                yielded += 1
                yield record
    finally:
        for _, future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


# --- output ---------------------------------------------------------------------------------

def _rejections(counts: dict[str, int], attempted: int) -> list[str]:
    total = sum(counts.values())
    share = f" ({100 * total / attempted:.1f}% of attempts)" if attempted else ""
    lines = [f"rejected during generation: {total} of {attempted} attempts{share}"]
    lines += [f"  {code:<28} {n}" for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines


def run(args: argparse.Namespace) -> int:
    """Check the options, then generate, verify and write the tasks; returns the exit status.

    0 on success, 1 when a sandbox or the output file failed, 2 on a usage error; the output file
    is written whole or not at all.
    """
    from toolgym.errors import SandboxError

    if args.count < 1:
        return _fail("--count must be at least 1")
    if args.sandboxes < 1:
        return _fail("--sandboxes must be at least 1")
    use_llm = args.llm_base_url is not None or args.llm_model is not None
    if use_llm and not (args.llm_base_url and args.llm_model):
        return _fail("--llm-base-url and --llm-model go together")
    verify = args.verify_sandbox or ("auto" if use_llm else "none")
    if use_llm and verify == "none":
        return _fail("an LLM writes code this process must never run: use --verify-sandbox "
                     "process, docker or auto (the default with --llm-base-url)")
    if use_llm and args.llm_workers < 1:
        return _fail("--llm-workers must be at least 1")
    if args.json and args.out == "-":
        return _fail("--out - writes the tasks to stdout: it does not go with --json (write them to a file)")

    started = time.perf_counter()
    final = args.out
    temp = None if final == "-" else f"{final}.partial"
    sandboxes: _Sandboxes | None = None
    bar: Progress | None = None
    try:
        if verify != "none":
            try:
                sandboxes = _Sandboxes(verify, args.sandbox_image, args.sandboxes)
            except SandboxError as exc:
                return _fail(f"no sandbox backend for --verify-sandbox {verify}: {exc}", 1)
        out: IO[str] = (sys.stdout if temp is None
                        else open(temp, "w", encoding="utf-8", newline="\n"))
        bar = Progress(args.count, "generate", "task", disable=not show_progress(args))
        try:
            summary, document = _write(args, use_llm, sandboxes, out, bar, started)
        finally:
            if out is not sys.stdout:
                out.close()
        if temp is not None:
            os.replace(temp, final)
            temp = None
    except SandboxError as exc:
        return _fail(f"a sandbox failed and could not be replaced: {exc}", 1)
    except _RunFailed as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"cannot write {final}: {exc}", 1)
    finally:
        if bar is not None:
            bar.close()
        if sandboxes is not None:
            sandboxes.close()
        if temp is not None and os.path.exists(temp):
            os.remove(temp)
    print("\n".join(summary), file=sys.stderr if final == "-" or args.json else sys.stdout)
    if args.json:
        emit_json(document)
    return 0


class _RunFailed(Exception):
    """The run stopped early (an LLM endpoint down or refusing, too many rejections)."""


def _write(args: argparse.Namespace, use_llm: bool, sandboxes: _Sandboxes | None, out: IO[str],
           bar: Progress, started: float) -> tuple[list[str], dict[str, Any]]:
    """Generate, verify and write; returns the summary lines and the same summary as a JSON document.

    The rate counts from ``started``, sandbox start-up included.
    """
    import json

    from toolgym.envs.base import SPLITS
    from toolgym.taskgen import FUNCTION_CALL_KNOBS, GenerationError, GenerationReport, ScalingKnobs, generate
    from toolgym.taskgen.generator import function_call_record
    from toolgym.taskgen.stats import stats

    knobs = FUNCTION_CALL_KNOBS if args.function_call else ScalingKnobs()
    tally: dict[str, Any] = {"tasks": 0, "calls": 0, "rejected": Counter(), "examples": {}}
    rows: list[dict[str, Any]] = []
    splits: Counter[str] = Counter()
    llm_lines: list[str] = []
    written = 0

    def emit(records: Iterable[dict[str, Any]]) -> None:
        nonlocal written
        for record in records:
            rows.append({"question_type": record["question_type"], "scaling": record["scaling"]})
            line = function_call_record(record) if args.function_call else record
            splits[line["split"]] += 1
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
            bar.update(1)

    if use_llm:
        from toolgym.taskgen.llm import ChatClient, LLMConfig, LLMError, LLMReport, generate_with_llm

        assert sandboxes is not None
        report: GenerationReport = LLMReport()
        config = LLMConfig.from_env(args.llm_base_url, args.llm_model, request_timeout_s=args.llm_timeout_s,
                                    max_attempts=args.llm_attempts, cache_path=args.llm_cache)
        with ChatClient(config) as client:
            try:
                emit(generate_with_llm(args.seed, args.count, client=client, runner=sandboxes, knobs=knobs,
                                       report=report, workers=args.llm_workers))
            except (LLMError, GenerationError) as exc:
                raise _RunFailed(f"stopped after {written} tasks: {exc}\n" + "\n".join(
                    _rejections(report.rejected, report.attempted))) from exc
            finally:
                llm_lines.append(f"LLM: {client.requests} requests to {config.url} (model {config.model})")
        assert isinstance(report, LLMReport)
        tally.update(tasks=report.kept + report.sandbox_rejected, calls=report.sandbox_calls)
    else:
        report = GenerationReport()
        try:
            if sandboxes is None:
                emit(generate(args.seed, args.count, knobs=knobs, report=report))
            else:
                # Records the sandbox drops are replaced by the next ones of the same seed.
                source = generate(args.seed, 2 * args.count + 100, knobs=knobs, report=report)
                emit(_verified(source, args.count, sandboxes, tally))
        except GenerationError as exc:
            raise _RunFailed(str(exc)) from exc
        if written < args.count:
            raise _RunFailed(f"only {written} of {args.count} tasks passed the sandbox: {dict(tally['rejected'])}")

    elapsed = time.perf_counter() - started
    kind = "FunctionCall" if args.function_call else "ToolUse"
    where = "stdout" if args.out == "-" else args.out
    lines = [f"wrote {written} {kind} tasks to {where} in {elapsed:.1f} s: {written / max(elapsed, 1e-9):.1f} tasks/s",
             "splits: " + ", ".join(f"{s} {splits[s]}" for s in SPLITS)]
    lines += llm_lines
    lines += _rejections(report.rejected, report.attempted)
    if sandboxes is not None:
        isolation = "" if sandboxes.backend.isolated else ", NOT isolated: local processes with rlimits"
        sandbox_rejected = sum(tally["rejected"].values()) if not use_llm else getattr(report, "sandbox_rejected", 0)
        boxes = f"{sandboxes.size} sandbox{'es' if sandboxes.size != 1 else ''}"
        lines.append(f"sandbox verification ({sandboxes.backend.name}, {boxes}{isolation}): "
                     f"{tally['tasks']} tasks, {tally['calls']} calls, {sandbox_rejected} rejected in the sandbox")
        for code, n in sorted(tally["rejected"].items()):
            lines.append(f"  {code:<28} {n}   e.g. {tally['examples'][code][:160]}")
    lines += ["question types x scaling operations:", str(stats(rows))]
    document: dict[str, Any] = {
        "out": None if args.out == "-" else args.out, "kind": kind, "seed": args.seed, "written": written,
        "elapsed_s": round(elapsed, 3), "splits": {s: splits[s] for s in SPLITS},
        "attempted": report.attempted, "rejected": dict(sorted(report.rejected.items())),
        "sandbox": None if sandboxes is None else {
            "backend": sandboxes.backend.name, "isolated": sandboxes.backend.isolated, "tasks": tally["tasks"],
            "calls": tally["calls"], "rejected": dict(sorted(tally["rejected"].items()))},
    }
    return lines, document
