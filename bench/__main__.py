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

from bench.report import checks, write_section
from bench.run import DATASET, PHASES, REPO_ROOT, SIZES, Bench, log, machine, now_iso

RESULTS = REPO_ROOT / "bench" / "results.json"
DOC = REPO_ROOT / "docs" / "BENCHMARKS.md"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes: exercises the code only")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS})")
    parser.add_argument("--doc", type=Path, default=None, help=f"markdown to update (default {DOC})")
    return parser.parse_args(argv)


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

    from dev.embedded import missing_services

    began = time.monotonic()
    media = Path(tempfile.mkdtemp(prefix="bench-media-"))
    with missing_services(REPO_ROOT / ".run" / "bench-services"):
        from bench import run

        run.prepare_environment(media)
        from django.conf import settings

        logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
        bench = Bench(sizes=SIZES[mode], logs=logs)
        bench.results.update(
            date=now_iso(),
            mode=mode,
            command="make bench"
            + {"full": "", "quick": " BENCH_ARGS=--quick", "smoke": " BENCH_ARGS=--smoke"}[mode],
            machine={**machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()]},
            config={
                "precision": settings.CLASSIFIER_PRECISION,
                "onnx_threads_per_process": os.cpu_count(),
                "decode_threads_per_process": settings.CLASSIFIER_DECODE_THREADS or os.cpu_count(),
                "bulk_chunk_size": settings.BULK_CHUNK_SIZE,
                "classify_batch_size": settings.CLASSIFY_BATCH_SIZE,
                "classify_batch_interval_s": settings.CLASSIFY_BATCH_INTERVAL_S,
                "bulk_worker_processes": run.BULK_PROCESSES,
                "classify_worker_processes": 1,
                "worker_batch_size": settings.CLASSIFIER_BATCH_SIZE,
            },
        )
        log(f"{mode} run, phases {phases}; worker logs in {logs}")
        try:
            for phase in PHASES:
                if phase in phases:
                    getattr(bench, phase)()
        finally:
            bench.close()
            run.drop_database()
            shutil.rmtree(media, ignore_errors=True)
    results = bench.results
    results["ratios"] = {
        key: round(results[a]["images_per_second"] / results[b]["images_per_second"], 2)
        for key, a, b in (
            ("pipeline_over_raw", "pipeline", "raw"),
            ("pipeline_over_baseline", "pipeline", "baseline"),
        )
        if a in results and b in results
    }
    if "pipeline" in results:
        # Runs paired in time with raw runs on the same photos: the ratio the target is about.
        results["ratios"]["pipeline_over_raw"] = results["pipeline"]["pipeline_over_paired_raw"]
        if "baseline" in results:
            # Through raw, each factor measured side by side: robust to load changing between phases.
            ratios = results["ratios"]
            ratios["pipeline_over_baseline_direct"] = ratios["pipeline_over_baseline"]
            ratios["pipeline_over_baseline"] = round(
                results["pipeline"]["pipeline_over_paired_raw"]
                * results["baseline"]["raw_over_paired_baseline"],
                2,
            )
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
