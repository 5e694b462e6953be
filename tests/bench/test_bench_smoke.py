"""The benchmark's code paths at tiny sizes (`python -m bench --smoke`): the figures mean nothing,
the run must finish and write its results and its markdown section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.catalogue import DATASET
from classifier.views import DEFAULT_SECOND_VIEW_MARGIN
from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.worker,
    pytest.mark.dataset,
    pytest.mark.skipif(not DATASET.is_dir(), reason=f"needs the photos of {DATASET}"),
]


def test_the_benchmark_runs_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    # given a markdown file with another section
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")

    # when the smoke run of four phases finishes
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--phases", "limit,raw,head_only,pipeline",
         "--out", str(out), "--doc", str(doc)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        # its own database and Redis database: a real benchmark may be running on these servers
        env={**os.environ, "BENCH_DATABASE": "marketplace_bench_smoke", "BENCH_REDIS_DB": "13"},
    )  # fmt: skip

    # then it wrote every figure of those phases, the machine, the ratio, and the section
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "smoke"
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu_model"]
    assert results["limit"]["images_per_second"] > 0 and results["limit"]["batch"] == 16
    assert results["raw"]["images"] == 8 and results["raw"]["images_per_second"] > 0
    assert results["head_only"]["scaling"][0]["images"] == 50
    assert results["pipeline"]["images"] == 12 and results["pipeline"]["images_per_second"] > 0
    assert results["ratios"]["pipeline_over_limit"] > 0 and results["ratios"]["pipeline_over_raw"] > 0
    assert results["config"]["second_view_margin"] == DEFAULT_SECOND_VIEW_MARGIN
    assert results["worker_peak_rss_mb"]["bulk"] > 0
    text = doc.read_text()
    assert "## Other\n\nkept" in text
    assert "## Throughput and latency" in text and "| **pipeline**" in text and "| **limit**" in text
