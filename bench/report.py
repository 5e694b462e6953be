"""Targets and the markdown section of docs/BENCHMARKS.md written from `bench/results.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTION = "## Throughput and latency"
RSS_LIMIT_MB = 600


def checks(results: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not (only those whose figures were measured in this run)."""
    found: dict[str, bool] = {}
    ratios = results.get("ratios", {})
    if "pipeline_over_raw" in ratios:
        found["pipeline/raw >= 0.8"] = ratios["pipeline_over_raw"] >= 0.8
    if "pipeline_over_baseline" in ratios:
        found["pipeline/baseline >= 8"] = ratios["pipeline_over_baseline"] >= 8
    if "large" in results:
        found["large >= 40 images/s"] = results["large"]["images_per_second"] >= 40
    if "head_only" in results:
        found["head_only >= 5000 images/s"] = results["head_only"]["images_per_second"] >= 5000
    if "latency" in results:
        found["latency p95 <= 500 ms"] = results["latency"]["p95_ms"] <= 500
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

    def mark(name: str) -> str:
        return "" if name not in ok else (" ✅" if ok[name] else " ❌ not met")

    lines = [
        SECTION,
        "",
        "Bulk reclassification and uploads through the whole system: real PostgreSQL, Redis and Celery",
        "workers as `docker/compose.yml` runs them (a classify worker with one process, a bulk worker",
        f"with {c.get('bulk_worker_processes', 1)}), on the photos of",
        "`../shared/datasets/clothing-small` (~400 px JPEGs) and copies of them. Everything below comes",
        "from one run of the command, phase after phase on the same machine; the machine is shared, so",
        "the load average during each phase is given (it moves absolute figures by 2-4x; ratios measured",
        "side by side move much less).",
        "",
        "```sh",
        "make bench                        # full run (7-10 minutes on 2 cores)",
        "make bench BENCH_ARGS=--quick     # smaller sizes, a few minutes",
        "```",
        "",
        f"Run of {results['date']} ({results['mode']} mode, {results.get('total_seconds', 0):.0f} s): "
        f"{m['cores']} cores, {m['cpu_model']}"
        + (f" ({', '.join(m['int8_instructions'])})" if m.get("int8_instructions") else "")
        + f", onnxruntime {m['onnxruntime']}. Backbone precision {c['precision']}; onnxruntime and decoding "
        f"threads per process = cores / the worker's processes ({c['onnx_threads_per_process']} in the "
        f"classify worker and in raw, {max(1, m['cores'] // c.get('bulk_worker_processes', 1))} in each bulk "
        f"process); {c.get('worker_batch_size', 16)} photos per onnxruntime call; bulk chunks of "
        f"{c['bulk_chunk_size']} photos to decode; upload batches of up to {c['classify_batch_size']} every "
        f"{c['classify_batch_interval_s']} s. "
        "Figures: `bench/results.json`.",
        "",
        "| measure | figure | target | load average |",
        "|---|---:|---|---:|",
    ]
    raw = results.get("raw")
    if raw:
        lines.append(
            f"| **raw**: in-process decode + batched onnxruntime ({raw.get('precision')}), "
            f"{raw['images']} photos | {raw['images_per_second']:g} images/s{_runs(raw)} | – | {_load(raw)} |"
        )
        if "fp32" in raw:
            lines.append(
                f"| raw with the fp32 backbone, same runs interleaved | {raw['fp32']['images_per_second']:g} "
                f"images/s{_runs(raw['fp32'])} | – | {_load(raw)} |"
            )
    pipeline = results.get("pipeline")
    ratios = results.get("ratios", {})
    if pipeline:
        ratio = ratios.get("pipeline_over_raw")
        lines.append(
            f"| **pipeline**: bulk job over {pipeline['images']} photos, CNN path (no cached embeddings), "
            f"start to last write | {pipeline['images_per_second']:g} images/s{_runs(pipeline)} "
            f"| pipeline/raw ≥ 0.8: **{ratio}**{mark('pipeline/raw >= 0.8')} | {_load(pipeline)} |"
        )
    baseline = results.get("baseline")
    if baseline:
        ratio = ratios.get("pipeline_over_baseline")
        lines.append(
            "| **baseline**: one task per photo, full decode, eager torchvision ResNet-50, "
            f"{baseline['images']} photos, the faster of torch's default threads and 1 thread "
            f"({', '.join(f'{v:g}' for v in baseline.get('variants', {}).values())}) "
            f"| {baseline['images_per_second']:g} images/s "
            f"| pipeline/baseline ≥ 8: **{ratio}**{mark('pipeline/baseline >= 8')} "
            "(pipeline/raw × raw/baseline, each side by side; "
            f"{ratios.get('pipeline_over_baseline_direct')} from the two phases' medians) "
            f"| {_load(baseline)} |"
        )
    large = results.get("large")
    if large:
        lines.append(
            f"| **large**: {large['images']} JPEGs of {large['megapixels']:g} MP "
            f"({large['mean_file_mb']:g} MB), bulk job, CNN path "
            f"| {large['images_per_second']:g} images/s{_runs(large)} | ≥ 40"
            f"{mark('large >= 40 images/s')} | {_load(large)} |"
        )
    head = results.get("head_only")
    if head:
        lines.append(
            f"| **head_only**: bulk job over {head['images']:,} photos from cached embeddings, database "
            f"writes included | {head['images_per_second']:,.0f} images/s | ≥ 5,000"
            f"{mark('head_only >= 5000 images/s')} | {_load(head)} |"
        )
    latency = results.get("latency")
    if latency:
        lines.append(
            f"| **latency**: upload → suggestion stored, {latency['achieved_rate_per_s']:g} uploads/s for "
            f"{latency['window_seconds']:g} s during a bulk job | p50 {latency['p50_ms']:g} ms, "
            f"**p95 {latency['p95_ms']:g} ms**, p99 {latency['p99_ms']:g} ms (max {latency['max_ms']:g}) "
            f"| p95 ≤ 500 ms{mark('latency p95 <= 500 ms')} | {_load(latency)} |"
        )
    rss = results.get("worker_peak_rss_mb", {})
    if rss:
        figures = ", ".join(f"{role} {value:g} MB" for role, value in sorted(rss.items()))
        lines.append(
            f"| **peak RSS** of a worker pool process (VmHWM) | {figures} | ≤ {RSS_LIMIT_MB} MB for ours"
            f"{mark(f'worker peak RSS <= {RSS_LIMIT_MB} MB')} | – |"
        )
    if head and head.get("scaling"):
        lines += [
            "",
            "Head-only reclassification as the catalogue grows (each size a fresh version, every photo",
            "scored and written):",
            "",
            "| photos | seconds | images/s |",
            "|---:|---:|---:|",
            *[
                f"| {row['images']:,} | {row['seconds']:g} | {row['images_per_second']:,.0f} |"
                for row in head["scaling"]
            ],
        ]
    if latency:
        lines += [
            "",
            f"During the latency window the bulk worker (niced by {latency['bulk_worker_nice']}, as a bulk "
            "worker sharing a host with a classify worker should be) wrote "
            f"{latency['bulk_photos_during_window']:,} photos; the job was "
            + (
                "still running at the end of the window."
                if latency["bulk_job_running_throughout"]
                else "**finished before the end of the window** (the backlog was too small)."
            )
            + f" {latency['classified']} of {latency['uploads']} uploads were classified.",
        ]  # fmt: skip
    lines += [
        "",
        "How each figure is taken:",
        "",
        "- raw: `classifier.batching.BatchClassifier` in the benchmark's process on photo bytes in memory;"
        " photos/s over the whole set, one process with the workers' threads per core and batch size."
        " The bulk worker's processes split the cores between them (one onnxruntime and one decoding"
        " thread each), which parallelises a little better than two threads in one process: that is"
        " how the pipeline can reach or pass raw.",
        "- pipeline, large, head_only: `BulkJob.created_at` to `finished_at` (planning, dispatch through"
        " Redis, reading files through Django's storage, decoding, inference, upserts of suggestions and"
        " embeddings, listing updates). Between runs the version's suggestions and all cached embeddings"
        " are dropped, so every run does the full work.",
        "- baseline: first task sent to the last suggestion row written, on the pipeline's photos, its own"
        " worker (`bench/naive.py`), between two raw runs on the same photos.",
        "- ratios: pipeline/raw is the median over runs of a pipeline run and the raw run just before it;"
        " pipeline/baseline is that times raw/baseline, also measured side by side, so load from other"
        " jobs on the shared machine that changes between phases cancels out.",
        "- latency: `ListingImage.created_at` (the photo stored by `services.image_add`) to"
        " `CategorySuggestion.created_at`, nearest-rank percentiles, uploads paced by the clock.",
        "- peak RSS: `VmHWM` of the workers' pool processes, read from /proc before they stop.",
    ]
    return "\n".join(lines) + "\n"


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
