"""`python -m dev.chaos [--only NAMES] [--report PATH | --no-report]`: see `dev/chaos/__init__.py`.

Exit status 0 when every scenario passed and the final SQL check found every photo sound.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dev.chaos.processes import REPO_ROOT, wait_for
from dev.chaos.servers import Servers

REPORT = REPO_ROOT / "docs" / "RELIABILITY.md"
RUN_DIR = REPO_ROOT / ".run" / "chaos"
PHOTOS = REPO_ROOT / "demo" / "photos"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dev.chaos", description=__doc__)
    parser.add_argument("--report", type=Path, default=REPORT, help=f"markdown to write (default {REPORT})")
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help=f"servers and logs (default {RUN_DIR})")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    began = time.monotonic()
    shutil.rmtree(args.run_dir, ignore_errors=True)
    servers = Servers(args.run_dir)
    try:
        servers.start()
        return _run(args, servers, began)
    finally:
        servers.stop()


def _run(args: argparse.Namespace, servers: Servers, began: float) -> int:
    from classifier.backbone import default_cache_dir

    # A key of this run's own, as the demo makes one; workers inherit it.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.update(
        DATABASE_URL=servers.database_url,
        CELERY_BROKER_URL=servers.broker_url,
        MEDIA_ROOT=str(args.run_dir / "media"),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from dev.chaos.check import final_check
    from dev.chaos.photos import failure_reason
    from dev.chaos.report import render, write
    from dev.chaos.scenarios import SCENARIOS, Row, Run

    call_command("migrate", interactive=False, verbosity=0)
    cache_dir = Path(os.environ.get("CLASSIFIER_CACHE_DIR") or default_cache_dir())
    photos = sorted(PHOTOS.glob("*/*.jpg"))
    run = Run(servers=servers, run_dir=args.run_dir, photo_paths=photos, cache_dir=cache_dir)
    rows: list[Row] = []
    verdict = None
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    try:
        for scenario in (s for s in SCENARIOS if not chosen or s.__name__ in chosen):
            log(f"{scenario.__name__} ...")
            try:
                row = scenario(run)
            except Exception as error:  # one scenario's breakage is reported, the run goes on
                row = Row(
                    scenario.__name__, "(did not complete)", 0, outcome=f"{type(error).__name__}: {error}"
                )
            log(f"{row.scenario}: {'pass' if row.ok else 'FAIL'} in {row.seconds:.1f} s, {row.outcome}")
            rows.append(row)
        log("waiting for the photos that must fail ...")
        try:
            wait_for(lambda: all(failure_reason(pk) for pk in run.expected_failures), timeout=120)
        except TimeoutError:
            log("some photos that must fail did not")
        connections.close_all()
        verdict = final_check(run.expected_failures)
    finally:
        run.stop_all()
    seconds = time.monotonic() - began
    text = render(rows, verdict, seconds=seconds, command="make chaos")
    print(text)
    if not args.no_report:
        write(args.report, text)
        log(f"wrote {args.report}")
    log(f"worker logs under {args.run_dir / 'logs'}")
    return 0 if verdict is not None and verdict.ok and all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
