"""Targets and the markdown section of docs/BENCHMARKS.md written from `bench/results.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTION = "## Throughput and latency"
RSS_LIMIT_MB = 400
PIPELINE_MIN = 200
PIPELINE_OVER_LIMIT_MIN = 0.55
PIPELINE_OVER_BASELINE_MIN = 20
LARGE_MIN = 80
HEAD_ONLY_MIN, HEAD_ONLY_AT = 20_000, 100_000
P95_MAX_MS = 300


def _head_only_at(results: dict[str, Any], size: int) -> dict[str, Any] | None:
    rows = [
        *results.get("head_only", {}).get("scaling", []),
        *results.get("head_only_1m", {}).get("scaling", []),
    ]
    return next((row for row in rows if row["images"] == size), None)


def checks(results: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not (only those whose figures were measured in this run)."""
    found: dict[str, bool] = {}
    ratios = results.get("ratios", {})
    if "pipeline" in results:
        found[f"pipeline >= {PIPELINE_MIN} images/s"] = (
            results["pipeline"]["images_per_second"] >= PIPELINE_MIN
        )
    if "pipeline_over_limit" in ratios:
        found[f"pipeline/limit >= {PIPELINE_OVER_LIMIT_MIN}"] = (
            ratios["pipeline_over_limit"] >= PIPELINE_OVER_LIMIT_MIN
        )
    if "pipeline_over_baseline" in ratios:
        found[f"pipeline/baseline >= {PIPELINE_OVER_BASELINE_MIN}"] = (
            ratios["pipeline_over_baseline"] >= PIPELINE_OVER_BASELINE_MIN
        )
    if "large" in results:
        found[f"large >= {LARGE_MIN} images/s"] = results["large"]["images_per_second"] >= LARGE_MIN
    head = _head_only_at(results, HEAD_ONLY_AT)
    if head is not None:
        found[f"head_only >= {HEAD_ONLY_MIN} images/s at {HEAD_ONLY_AT:,}"] = (
            head["images_per_second"] >= HEAD_ONLY_MIN
        )
    if "latency" in results:
        found[f"latency p95 <= {P95_MAX_MS} ms"] = results["latency"]["p95_ms"] <= P95_MAX_MS
    ours = {k: v for k, v in results.get("worker_peak_rss_mb", {}).items() if not k.startswith("naive")}
    if ours:
        found[f"worker peak RSS <= {RSS_LIMIT_MB} MB"] = max(ours.values()) <= RSS_LIMIT_MB
    return found


def _runs(entry: dict[str, Any]) -> str:
    runs = entry.get("runs_images_per_second", [])
    if len(runs) < 2:
        return ""
    return f" (median of {len(runs)}: {', '.join(f'{r:g}' for r in runs)})"


def _load(entry: dict[str, Any]) -> str:
    before, after = entry.get("load_average_before", [None])[0], entry.get("load_average_after", [None])[0]
    return f"{before:g}–{after:g}" if before is not None and after is not None else "–"


def render(results: dict[str, Any]) -> str:
    """The section, from its heading to the end of its text."""
    m, c = results["machine"], results["config"]
    ok = results.get("targets", {})
    ratios = results.get("ratios", {})

    def mark(name: str) -> str:
        return "" if name not in ok else (" ✅" if ok[name] else " ❌ not met")

    device = c.get("device", "cpu")
    lines = [
        SECTION,
        "",
        "Bulk reclassification and uploads through the whole system: real PostgreSQL, Redis and Celery",
        "workers as `docker/compose.yml` runs them (a classify worker with one process, a bulk worker",
        f"with {c.get('bulk_worker_processes', 1)}), on the photos of",
        "`../shared/datasets/clothing-small` (~400 px JPEGs) and copies of them. Everything below comes",
        "from one run of the command, phase after phase on the same machine. The machine is shared, so",
        "the load average during each phase is given (it moves absolute figures by 2-4x); ratios between",
        "phases come from runs paired in time (a `limit` run right before each pipeline run, around each",
        "baseline run), which a change of load between phases does not move.",
        "",
        "```sh",
        "make bench                                 # full run (the 1M-photo phase adds a few minutes)",
        "make bench BENCH_ARGS=--quick              # smaller sizes, a few minutes",
        "make bench BENCH_ARGS='--device cuda'      # the same phases with the backbone on a GPU",
        "```",
        "",
        f"Run of {results['date']} ({results['mode']} mode, {results.get('total_seconds', 0):.0f} s, device "
        f"{device}): {m['cores']} cores, {m['cpu_model']}"
        + (f" ({', '.join(m['int8_instructions'])})" if m.get("int8_instructions") else "")
        + f", onnxruntime {m['onnxruntime']}. Backbone precision {c['precision']}; onnxruntime and decoding "
        f"threads per process = cores / the worker's processes ({c['onnx_threads_per_process']} in the "
        f"classify worker and in raw, {max(1, m['cores'] // c.get('bulk_worker_processes', 1))} in each bulk "
        f"process); {c.get('worker_batch_size', 16)} photos per onnxruntime call; a photo's second view "
        f'only below a top-2 margin of {c.get("second_view_margin", 1.0):g} (see "Second view"); bulk '
        f"chunks of {c['bulk_chunk_size']} photos to decode; upload batches of up to "
        f"{c['classify_batch_size']} every {c['classify_batch_interval_s']} s. "
        "Figures: `bench/results.json`.",
        "",
        "| measure | figure | target | load average |",
        "|---|---:|---|---:|",
        *_rows(results, ratios, mark),
    ]
    lines += _scaling(results)
    lines += _latency_note(results)
    lines += _scaleout(results)
    lines += _how(device)
    return "\n".join(lines) + "\n"


def _rows(results: dict[str, Any], ratios: dict[str, Any], mark: Any) -> list[str]:
    rows = []
    limit = results.get("limit")
    if limit:
        rows.append(
            f"| **limit**: the served backbone alone ({limit['precision']}), pre-decoded 224×224 photos, one "
            f"view, batch {limit['batch']}, {limit['threads']} threads | {limit['images_per_second']:g} "
            f"images/s{_runs(limit)} | – | {_load(limit)} |"
        )
    raw = results.get("raw")
    if raw:
        rows.append(
            f"| **raw**: in-process decode + batched onnxruntime ({raw.get('precision')}), views as served, "
            f"{raw['images']} photos | {raw['images_per_second']:g} images/s{_runs(raw)} | – | {_load(raw)} |"
        )
        if "fp32" in raw:
            rows.append(
                f"| raw with the fp32 backbone, same runs interleaved | {raw['fp32']['images_per_second']:g} "
                f"images/s{_runs(raw['fp32'])} | – | {_load(raw)} |"
            )
    pipeline = results.get("pipeline")
    if pipeline:
        rows.append(
            f"| **pipeline**: bulk job over {pipeline['images']} photos, CNN path (no cached embeddings), "
            f"start to last write | {pipeline['images_per_second']:g} images/s{_runs(pipeline)} "
            f"| ≥ {PIPELINE_MIN}{mark(f'pipeline >= {PIPELINE_MIN} images/s')}; pipeline/limit ≥ "
            f"{PIPELINE_OVER_LIMIT_MIN}: **{ratios.get('pipeline_over_limit')}**"
            f"{mark(f'pipeline/limit >= {PIPELINE_OVER_LIMIT_MIN}')} (each run over the limit run before it; "
            f"limit runs {', '.join(f'{r:g}' for r in pipeline.get('paired_limit_images_per_second', []))}) "
            f"| {_load(pipeline)} |"
        )
    baseline = results.get("baseline")
    if baseline:
        rows.append(
            "| **baseline**: one task per photo, full decode, eager torchvision ResNet-50, "
            f"{baseline['images']} photos, the faster of torch's default threads and 1 thread "
            f"({', '.join(f'{v:g}' for v in baseline.get('variants', {}).values())}) "
            f"| {baseline['images_per_second']:g} images/s "
            f"| pipeline/baseline ≥ {PIPELINE_OVER_BASELINE_MIN}: **{ratios.get('pipeline_over_baseline')}**"
            f"{mark(f'pipeline/baseline >= {PIPELINE_OVER_BASELINE_MIN}')} (pipeline/limit × limit/baseline, "
            f"each side by side; {ratios.get('pipeline_over_baseline_direct')} from the two phases' medians) "
            f"| {_load(baseline)} |"
        )
    large = results.get("large")
    if large:
        rows.append(
            f"| **large**: {large['images']} JPEGs of {large['megapixels']:g} MP "
            f"({large['mean_file_mb']:g} MB), bulk job, CNN path "
            f"| {large['images_per_second']:g} images/s{_runs(large)} | ≥ {LARGE_MIN}"
            f"{mark(f'large >= {LARGE_MIN} images/s')} (over the limit run before each: "
            f"{large.get('large_over_paired_limit')}) | {_load(large)} |"
        )
    head = results.get("head_only")
    if head:
        name = f"head_only >= {HEAD_ONLY_MIN} images/s at {HEAD_ONLY_AT:,}"
        verdict = mark(name) if _head_only_at(results, HEAD_ONLY_AT) else " (not measured at that size)"
        rows.append(
            f"| **head_only**: bulk job over {head['images']:,} photos from cached embeddings, database "
            f"writes included | {head['images_per_second']:,.0f} images/s | ≥ {HEAD_ONLY_MIN:,} at "
            f"{HEAD_ONLY_AT:,}{verdict} | {_load(head)} |"
        )
    latency = results.get("latency")
    if latency:
        rows.append(
            f"| **latency**: upload → suggestion stored, {latency['achieved_rate_per_s']:g} uploads/s for "
            f"{latency['window_seconds']:g} s during a bulk job | p50 {latency['p50_ms']:g} ms, "
            f"**p95 {latency['p95_ms']:g} ms**, p99 {latency['p99_ms']:g} ms (max {latency['max_ms']:g}) "
            f"| p95 ≤ {P95_MAX_MS} ms{mark(f'latency p95 <= {P95_MAX_MS} ms')} | {_load(latency)} |"
        )
    rss = results.get("worker_peak_rss_mb", {})
    if rss:
        figures = ", ".join(f"{role} {value:g} MB" for role, value in sorted(rss.items()))
        rows.append(
            f"| **peak RSS** of a worker pool process (VmHWM) | {figures} | ≤ {RSS_LIMIT_MB} MB for ours"
            f"{mark(f'worker peak RSS <= {RSS_LIMIT_MB} MB')} | – |"
        )
    return rows


def _scaling(results: dict[str, Any]) -> list[str]:
    rows = [
        *results.get("head_only", {}).get("scaling", []),
        *results.get("head_only_1m", {}).get("scaling", []),
    ]
    if not rows:
        return []
    return [
        "",
        "Head-only reclassification as the catalogue grows (each size a fresh version, every photo",
        "scored and written; the synthetic catalogue's cached outputs are written by binary COPY first,",
        "at the rate given):",
        "",
        "| photos | seconds | images/s | cached outputs written by COPY (rows/s) |",
        "|---:|---:|---:|---:|",
        *[
            f"| {row['images']:,} | {row['seconds']:g} | {row['images_per_second']:,.0f} "
            f"| {row.get('embeddings_copied_per_second', 0):,.0f} |"
            for row in sorted(rows, key=lambda row: row["images"])
        ],
    ]


def _latency_note(results: dict[str, Any]) -> list[str]:
    latency = results.get("latency")
    if not latency:
        return []
    state = (
        "still running at the end of the window."
        if latency["bulk_job_running_throughout"]
        else "**finished before the end of the window** (the backlog was too small)."
    )
    return [
        "",
        f"During the latency window the bulk worker (niced by {latency['bulk_worker_nice']}, as a bulk "
        "worker sharing a host with a classify worker should be) wrote "
        f"{latency['bulk_photos_during_window']:,} photos; the job was {state} {latency['classified']} of "
        f"{latency['uploads']} uploads were classified.",
    ]


def _scaleout(results: dict[str, Any]) -> list[str]:
    from bench.scaleout import render as render_scaleout

    return render_scaleout(results)


def _how(device: str) -> list[str]:
    return [
        "",
        "How each figure is taken:",
        "",
        "- limit: `bench/limit.py`: the workers' network file and precision in this process, every core,"
        " idle onnxruntime threads spinning and not, the faster kept, on the first view of 64 photos decoded"
        " beforehand, cycled; the"
        " hardware's figure with no decoding, database or queue.",
        "- raw: `classifier.batching.BatchClassifier` in the benchmark's process on photo bytes in memory;"
        " photos/s over the whole set, one process with the workers' threads per core and batch size.",
        "- pipeline, large, head_only: `BulkJob.created_at` to `finished_at` (planning, dispatch through"
        " Redis, reading files through Django's storage, decoding, inference, upserts of suggestions and"
        " embeddings, listing updates). Between runs the version's suggestions and all cached embeddings"
        " are dropped, so every run does the full work. Pipeline and large jobs are cut into chunks of"
        " 1,000 photos, or fewer when the job is too small to give every bulk process a chunk (as a"
        " catalogue of thousands would).",
        "- baseline: first task sent to the last suggestion row written, on the pipeline's photos, its own"
        " worker (`bench/naive.py`), between two limit runs.",
        "- ratios: pipeline/limit is the median over runs of a pipeline run over the limit run just before"
        " it; pipeline/baseline is that times limit/baseline, also measured side by side.",
        "- latency: `ListingImage.created_at` (the photo stored by `image_add`) to"
        " `CategorySuggestion.created_at`, nearest-rank percentiles, uploads paced by the clock.",
        "- peak RSS: `VmHWM` of the workers' pool processes (the worker itself for a solo pool), read from"
        " /proc before they stop.",
        "",
        "GPU: `--device cuda` runs every phase with `CLASSIFIER_DEVICE=cuda` (onnxruntime-gpu from"
        " `requirements-gpu.txt`, fp32, batches of 64, each worker one solo-pool process, as GPU workers"
        " are deployed). "
        + (
            "No GPU was available where these figures were measured: the CUDA path is tested on the CPU"
            " only (its top-5 agreement test, marked `gpu`, skips here)."
            if device == "cpu"
            else "These figures were measured on a GPU."
        ),
    ]


def write_section(doc: Path, results: dict[str, Any]) -> None:
    """Replace the section in `doc` (or append it), leaving the other sections as they are."""
    replace_section(doc, render(results), SECTION)


def replace_section(doc: Path, section: str, heading: str) -> None:
    """Replace the `heading` section of `doc` (up to the next `## `) by `section`, or append it."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    if heading in text:
        start = text.index(heading)
        following = text.find("\n## ", start + len(heading))
        end = len(text) if following == -1 else following + 1
        text = text[:start] + section + ("\n" + text[end:] if following != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text, encoding="utf-8")
