"""Measures "upload finished → suggestion visible" in the browser (not asserted; see
docs/BENCHMARKS.md, "Seller page latency"). Skipped unless SELLER_LATENCY_RUNS is set:

    SELLER_LATENCY_RUNS=20 .venv/bin/python -m pytest tests/e2e/test_seller_latency.py -s

Each run adds one photo to the listing form of a new listing (it uploads at once, into a draft).
"Upload finished" is the end of that htmx request; "suggestion visible" is when the polled
category field with the suggestions enters the page (a MutationObserver in photos.js). Both come
from the page's own clock. One warm-up run is not counted.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path

import pytest

from catalog.views.seller import SUGGESTION_POLL_MS
from tests.conftest import WorkerProcess
from tests.e2e.conftest import ARTIFACTS, DESKTOP, sign_up

RUNS = int(os.environ.get("SELLER_LATENCY_RUNS") or 0)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.usefixtures("taxonomy"),
    pytest.mark.skipif(RUNS <= 0, reason="a measurement, not a test: set SELLER_LATENCY_RUNS=20 to run it"),
]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def test_measure_upload_to_suggestion_latency(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path]
) -> None:
    page = new_page(DESKTOP)
    sign_up(page, "bench")
    samples: list[float] = []
    for run in range(RUNS + 1):
        page.goto("/sell/new/")
        page.get_by_label("Title").fill(f"Item {run}")
        # the photo uploads as soon as it is added; suggestions reach the form before publishing
        page.locator("#id_photos").set_input_files([str(two_photos[run % len(two_photos)])])
        page.wait_for_url(re.compile(r".*/sell/\d+/$"))
        page.locator('#suggestions:not([data-suggestion-count="0"])').wait_for(timeout=90_000)
        timings = page.evaluate("() => window.sellerTimings")
        latency = timings["suggestionShownAt"] - timings["uploadDoneAt"]
        if run > 0:  # the first run also warms the page cache and the worker's connection
            samples.append(round(latency, 1))

    result = {
        "runs": len(samples),
        "poll_interval_ms": SUGGESTION_POLL_MS,
        "p50_ms": percentile(samples, 0.50),
        "p95_ms": percentile(samples, 0.95),
        "max_ms": max(samples),
        "mean_ms": round(statistics.fmean(samples), 1),
        "samples_ms": samples,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "seller-latency.json").write_text(json.dumps(result, indent=2))
    print("\nupload finished → suggestion visible:", json.dumps(result))
