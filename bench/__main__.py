"""`python -m bench [--quick | --smoke] [--phases raw,pipeline,...]`: see `bench/__init__.py`.

Starts embedded PostgreSQL and Redis when DATABASE_URL / CELERY_BROKER_URL are unset (as `make
test` does), runs the phases, writes `bench/results.json` and the "Throughput and latency" section
of `docs/BENCHMARKS.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.catalogue import DATASET
from bench.environment import REPO_ROOT, log, machine, now_iso
from bench.phases import PHASES
from bench.report import checks, write_section
from bench.run import SIZES, Bench

RESULTS = REPO_ROOT / "bench" / "results.json"
DOC = REPO_ROOT / "docs" / "BENCHMARKS.md"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes: exercises the code only")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=os.environ.get("CLASSIFIER_DEVICE", "cpu"),
        help="where the workers (and the in-process phases) run the backbone; cuda: onnxruntime-gpu "
        "(requirements-gpu.txt), one solo-pool worker process",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS})")
    parser.add_argument("--doc", type=Path, default=None, help=f"markdown to update (default {DOC})")
    return parser.parse_args(argv)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Ratios between phases. Those with `limit` come from runs paired in time (each pipeline run
    right after a limit run; each baseline run between two), so load that other jobs put on a
    shared machine between phases cancels out; pipeline/baseline is pipeline/limit ×
    limit/baseline, each measured side by side. `_direct` ones divide the phases' medians."""
    found: dict[str, float] = {}

    def rate(phase: str) -> float | None:
        value = results.get(phase, {}).get("images_per_second")
        return float(value) if value else None

    for key, a, b in (
        ("pipeline_over_raw", "pipeline", "raw"),
        ("pipeline_over_limit_direct", "pipeline", "limit"),
        ("pipeline_over_baseline_direct", "pipeline", "baseline"),
        ("raw_over_limit", "raw", "limit"),
    ):
        numerator, denominator = rate(a), rate(b)
        if numerator and denominator:
            found[key] = round(numerator / denominator, 3)
    pipeline, baseline = results.get("pipeline", {}), results.get("baseline", {})
    if "pipeline_over_paired_limit" in pipeline:
        found["pipeline_over_limit"] = pipeline["pipeline_over_paired_limit"]
        if "limit_over_paired_baseline" in baseline:
            found["pipeline_over_baseline"] = round(
                pipeline["pipeline_over_paired_limit"] * baseline["limit_over_paired_baseline"], 2
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        print(f"unknown phases: {sorted(unknown)}", file=sys.stderr)
        return 2
    if not DATASET.is_dir():
        print(f"the benchmark needs the photos of {DATASET}", file=sys.stderr)
        return 2
    # Smoke runs write beside the real results unless told otherwise, never over them.
    out = args.out or (RESULTS if mode != "smoke" else RESULTS.with_name("results-smoke.json"))
    doc = args.doc if args.doc is not None else (DOC if mode != "smoke" else None)

    # Read by the settings of this process and inherited by every worker it starts.
    os.environ["CLASSIFIER_DEVICE"] = args.device
    from dev.embedded import missing_services

    began = time.monotonic()
    media = Path(tempfile.mkdtemp(prefix="bench-media-"))
    with missing_services(REPO_ROOT / ".run" / "bench-services"):
        from bench import environment

        environment.prepare_environment(media)
        from django.conf import settings

        from workers import inference

        logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
        bench = Bench(sizes=SIZES[mode], logs=logs)
        bench.results.update(
            date=now_iso(),
            mode=mode,
            command="make bench"
            + {"full": "", "quick": " BENCH_ARGS=--quick", "smoke": " BENCH_ARGS=--smoke"}[mode]
            + ("" if args.device == "cpu" else f" (--device {args.device})"),
            machine={**machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()]},
            config={
                "precision": settings.CLASSIFIER_PRECISION,
                "onnx_threads_per_process": os.cpu_count(),
                "decode_threads_per_process": settings.CLASSIFIER_DECODE_THREADS or os.cpu_count(),
                "bulk_chunk_size": settings.BULK_CHUNK_SIZE,
                "classify_batch_size": settings.CLASSIFY_BATCH_SIZE,
                "classify_batch_interval_s": settings.CLASSIFY_BATCH_INTERVAL_S,
                "bulk_worker_processes": environment.BULK_PROCESSES,
                "classify_worker_processes": 1,
                "worker_batch_size": inference.batch_size(),
                "device": args.device,
                "second_view_margin": inference.view_policy().second_view_margin,
            },
        )
        log(f"{mode} run, phases {phases}; worker logs in {logs}")
        try:
            for phase, run in PHASES.items():
                if phase in phases:
                    run(bench)
        finally:
            bench.close()
            environment.drop_database()
            shutil.rmtree(media, ignore_errors=True)
    results = bench.results
    results["ratios"] = ratios(results)
    results["targets"] = checks(results)
    results["total_seconds"] = round(time.monotonic() - began, 1)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log(f"results in {out} ({results['total_seconds']} s)")
    if doc is not None:
        write_section(doc, results)
        log(f"section updated in {doc}")
    for name, passed in results["targets"].items():
        log(f"target {name}: {'met' if passed else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
