"""`make demo` end to end, with its embedded PostgreSQL and Redis (DEMO_ONCE=1 exits after the table)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DEMO_PHOTOS = REPO_ROOT / "demo" / "photos"


@pytest.mark.worker
def test_demo_classifies_the_shipped_photos_with_embedded_servers(tmp_path: Path) -> None:
    photos = sorted(DEMO_PHOTOS.rglob("*.jpg"))
    if not photos:
        pytest.skip("no demo photos under demo/photos")
    # given no configured servers: the demo must start its own
    env = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CELERY_BROKER_URL"}
    }
    env.update({"DEMO_ONCE": "1", "RUN_DIR": str(tmp_path / "run"), "MEDIA_ROOT": str(tmp_path / "media")})

    # when the demo runs once
    result = subprocess.run(
        [sys.executable, "-m", "config.demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    # then it exits 0 after printing one table row per photo, each with a category and a version
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("photo"))
    rows = [line for line in lines[header + 2 :] if line.strip() and "auto-accepted (" not in line]
    assert len(rows) == len(photos)
    assert not [row for row in rows if "FAILED" in row]
    # and it says who set each listing's category: the demo's sellers skip the choice, so the
    # model sets most of them (auto-accepted), the others wait for a person
    assert "listing category (source)" in lines[header]
    assert not [row for row in rows if "(seller)" in row]
    auto = [row for row in rows if "(auto)" in row]
    assert len(auto) > len(rows) // 2
    assert f"{len(auto)} of {len(rows)} listings auto-accepted" in result.stdout
    # and every process it started is gone (no server left on its data directory)
    assert not (tmp_path / "run" / "services.env").exists()
