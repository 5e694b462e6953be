"""`make demo` end to end, with its embedded PostgreSQL and Redis (DEMO_ONCE=1 exits after the table)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from config.embedded import free_port
from tests.conftest import FIXTURE_PHOTOS, REPO_ROOT, wait_for

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


def _without_configuration(**extra: str) -> dict[str, str]:
    """This environment without server URLs, MEDIA_ROOT or a secret key: what a shell beside a
    demo has."""
    unset = {
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "MEDIA_ROOT",
        "DEMO_ONCE",
        "STORAGE_BACKEND",
        "DJANGO_SECRET_KEY",
    }
    return {**{key: value for key, value in os.environ.items() if key not in unset}, **extra}


def _command_lines() -> list[str]:
    """The command line of every process this user can see, as `ps` shows them."""
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except (urllib.error.URLError, OSError):
        return 0, "", b""


@pytest.mark.worker
def test_import_photos_run_beside_a_running_demo_uses_its_database_broker_and_photo_storage(
    tmp_path: Path, photo_paths: list[Path]
) -> None:
    # given a running demo (embedded servers, worker, web app) serving on a port of its own
    run_dir = tmp_path / "run"
    web_port, flower_port = free_port(), free_port()
    demo_env = _without_configuration(
        RUN_DIR=str(run_dir), DEMO_WEB_PORT=str(web_port), DEMO_FLOWER_PORT=str(flower_port)
    )
    log = tmp_path / "demo.log"
    with log.open("ab") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "config.demo"], cwd=REPO_ROOT, env=demo_env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(
            lambda: demo.poll() is not None or _get(f"{base}/healthz")[0] == 200, timeout=900, interval=1
        )
        assert demo.poll() is None, log.read_text()[-3000:]

        # when import_photos runs in another shell that sets nothing but the demo's run folder
        result = subprocess.run(
            [sys.executable, "manage.py", "import_photos", str(FIXTURE_PHOTOS), "--seller", "beside",
             "--wait", "--timeout", "300"],
            cwd=REPO_ROOT, env=_without_configuration(RUN_DIR=str(run_dir)),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

        # then every photo is classified by the demo's worker (none "missing from storage")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        lines = result.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("photo"))
        rows = [line for line in lines[header + 2 :] if line.strip() and "auto-accepted (" not in line]
        assert len(rows) == len(photo_paths)
        assert not [row for row in rows if "FAILED" in row]
        # and the demo's web app serves each photo's thumbnail from the same storage
        query = IMAGE_IDS_OF_SELLER.format(seller="beside")
        ids = subprocess.run(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", query],
            cwd=REPO_ROOT, env=_without_configuration(RUN_DIR=str(run_dir)),
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.split()  # fmt: skip
        assert len(ids) == len(photo_paths)
        for image_id in ids:
            status, content_type, body = _get(f"{base}/photos/{image_id}/small.webp")
            assert (status, content_type) == (200, "image/webp"), image_id
            assert Image.open(io.BytesIO(body)).format == "WEBP"
        stored = list((run_dir / "media").rglob("*.jpg"))
        assert len(stored) >= len(photo_paths)
        # and the demo's password is on no command line that `ps` shows (Flower reads it from its
        # environment, the staff account's script too)
        password = wait_for(lambda: re.search(r"user demo, password (\S+)\)", log.read_text()), timeout=60)
        assert password
        assert not [cmdline for cmdline in _command_lines() if password[1] in cmdline]
    finally:
        # Ctrl-C's twin: the demo stops every process it started and removes services.env
        demo.send_signal(signal.SIGTERM)
        demo.wait(120)
    assert not (run_dir / "services.env").exists()


IMAGE_IDS_OF_SELLER = (
    "from catalog.models import ListingImage; "
    "print(*ListingImage.objects.filter(listing__seller__username='{seller}').values_list('pk', flat=True))"
)
