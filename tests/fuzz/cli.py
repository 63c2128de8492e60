"""The fuzzing command line: list targets, run one, or run a campaign over all of them.

  python tests/fuzz list
  python tests/fuzz run TARGET [--minutes N | --runs N] [--seed S] [--engine E]
  python tests/fuzz campaign --minutes N [--engine E] [--json FILE]

The engine is ``atheris`` (coverage-guided libFuzzer; x86_64 wheels) when it is
installed, else ``mutate`` (seeded mutation, pure Python). Findings are written to
``tests/fuzz/findings/`` (one input and one line of summary per distinct finding); a
run exits 1 when it found anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fuzz.engine import HERE, Result, atheris_available, atheris_run, mutate_run
from fuzz.targets import TARGETS


def run_target(name: str, *, engine: str, seconds: float | None, runs: int | None,
               seed: int, save: Path) -> Result:
    target = TARGETS[name]
    if engine == "atheris":
        if runs is not None:
            raise SystemExit("--runs is for the mutate engine; give atheris --minutes")
        return atheris_run(name, seconds=max(1, int(seconds or 60)), seed=seed, save=save)
    return mutate_run(name, target.run, target.allowed, target.seeds(), runs=runs,
                      seconds=seconds, seed=seed, save=save)


def report(results: list[Result]) -> None:
    print(f"{'target':22} {'engine':8} {'executions':>11} {'seconds':>8} {'findings':>8}")
    for r in results:
        print(f"{r.target:22} {r.engine:8} {r.executions:11d} {r.seconds:8.0f} "
              f"{len(r.findings):8d}")
        for finding in r.findings.values():
            print(f"    {finding.summary}")
    print(f"{'total':22} {'':8} {sum(r.executions for r in results):11d} "
          f"{sum(r.seconds for r in results):8.0f} {sum(len(r.findings) for r in results):8d}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/fuzz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    default_engine = "atheris" if atheris_available() else "mutate"
    for name in ("run", "campaign"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("target", choices=sorted(TARGETS))
            p.add_argument("--runs", type=int)
        p.add_argument("--minutes", type=float, default=None if name == "run" else 1.0)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--engine", choices=("atheris", "mutate"), default=default_engine)
        p.add_argument("--findings", type=Path, default=HERE / "findings")
        p.add_argument("--json", type=Path, help="also write the totals here")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, target in TARGETS.items():
            print(f"{name:22} {target.what}")
        return 0
    names = [args.target] if args.command == "run" else list(TARGETS)
    runs = getattr(args, "runs", None)
    seconds = args.minutes * 60 if args.minutes else None
    if runs is None and seconds is None:
        seconds = 60.0
    results = []
    failed = []
    for name in names:
        try:
            results.append(run_target(name, engine=args.engine, seconds=seconds, runs=runs,
                                      seed=args.seed, save=args.findings))
        except RuntimeError as exc:  # a child that crashed outright: report, go on
            failed.append(name)
            print(f"{name}: {exc}", flush=True)
            continue
        print(f"{name}: {results[-1].executions} executions, "
              f"{len(results[-1].findings)} finding(s)", flush=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps([{
            "target": r.target, "engine": r.engine, "executions": r.executions,
            "seconds": round(r.seconds), "findings": [f.summary for f in r.findings.values()],
        } for r in results], indent=2) + "\n")
    return 1 if failed or any(r.findings for r in results) else 0
