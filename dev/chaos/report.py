"""docs/RELIABILITY.md: what the fault-injection run checks and the table of its last run."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from dev.chaos.check import Verdict, query_text
from dev.chaos.scenarios import Row

INTRO = """# Reliability

Every uploaded photo ends with exactly one suggestion per model version, or FAILED with a
reason a person can read, within a bounded time; one photo's fault never holds back another;
a worker never serves a model file it cannot trust. The tests under `tests/workers/` prove each
rule on its own (`test_faults.py`, `test_photo_isolation.py`, `test_model_cache.py`,
`test_retry.py`); `make chaos` breaks them all in one run, against real servers.

## The fault-injection run

`make chaos` (`python -m dev.chaos`) starts an embedded PostgreSQL and Redis under `.run/chaos/`
(never the servers of `DATABASE_URL` / `CELERY_BROKER_URL`), migrates, and starts a real
Celery worker (one pool process, the int8 model). Each scenario uploads demo photos through the
real services and injects its fault while they are classified; the time given is from the
fault to the moment every innocent photo of the scenario was DONE with one suggestion. Nothing
is restarted by hand: a killed worker is replaced as an orchestrator would replace it, and the
sweeper is called as beat calls it every minute. The run ends with one SQL statement over every
photo in the database (below the table).
"""


def render(rows: Sequence[Row], verdict: Verdict | None, *, seconds: float, command: str) -> str:
    """The whole document, with the run's table and the final check."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        INTRO,
        f"### Last run: {when}, {os.cpu_count()} cores ({platform.machine()}), {seconds:.0f} s in all",
        "",
        f"Command: `{command}`",
        "",
        "| scenario | fault | photos | innocent photos DONE after | outcome | result |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        took = f"{row.seconds:.1f} s" if row.ok else "—"
        lines.append(
            f"| {row.scenario} | {row.fault} | {row.photos} | {took} | {row.outcome} | "
            f"{'pass' if row.ok else 'FAIL'} |"
        )
    lines += ["", "### Final check", ""]
    if verdict is None:
        lines.append("Not reached.")
    else:
        lines.append(
            f"{verdict.photos} photos: {verdict.done} DONE with exactly one suggestion, {verdict.failed} "
            f"FAILED with the reason their fault calls for, {len(verdict.unsound)} otherwise"
            + (f" (ids {verdict.unsound})" if verdict.unsound else "")
            + f": **{'pass' if verdict.ok else 'FAIL'}**."
        )
    lines += ["", "```sql", query_text(), "```", ""]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
