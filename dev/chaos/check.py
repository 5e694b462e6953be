"""The run's last word: one SQL statement over every photo in the database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import connection

from catalog.models import CategorySuggestion, ListingImage

# A photo is sound when it is DONE with exactly one suggestion and no fault asked it to fail, or
# FAILED with exactly the reason its fault calls for (and no suggestion).
CHECK_SQL = """
WITH expected(image_id, reason) AS (SELECT * FROM unnest(%s::bigint[], %s::text[])),
photo AS (
    SELECT i.id, i.status, i.failure_reason, e.reason AS expected_reason,
           (SELECT count(*) FROM {suggestion} s WHERE s.image_id = i.id) AS suggestions
    FROM {image} i LEFT JOIN expected e ON e.image_id = i.id
)
SELECT count(*) AS photos,
       count(*) FILTER (WHERE status = 'done' AND suggestions = 1 AND expected_reason IS NULL) AS done,
       count(*) FILTER (WHERE status = 'failed' AND suggestions = 0 AND failure_reason = expected_reason)
           AS failed,
       coalesce(array_agg(id ORDER BY id) FILTER (WHERE NOT (
           (status = 'done' AND suggestions = 1 AND expected_reason IS NULL)
           OR (status = 'failed' AND suggestions = 0 AND failure_reason = expected_reason)
       )), '{{}}') AS unsound
FROM photo
"""


@dataclass(frozen=True)
class Verdict:
    """The check's answer: photos in all, DONE once, FAILED with their true reason, and the ids
    of any other (stuck, duplicated, or failed for another reason)."""

    photos: int
    done: int
    failed: int
    unsound: list[int]

    @property
    def ok(self) -> bool:
        return not self.unsound and self.photos == self.done + self.failed


def final_check(expected_failures: Mapping[int, str]) -> Verdict:
    """Run `CHECK_SQL`, given the photos that must be FAILED and their reasons."""
    sql = CHECK_SQL.format(suggestion=CategorySuggestion._meta.db_table, image=ListingImage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(expected_failures), list(expected_failures.values())])
        photos, done, failed, unsound = cursor.fetchone()
    return Verdict(photos=photos, done=done, failed=failed, unsound=list(unsound))


def query_text() -> str:
    """The statement as it runs, for the report."""
    return CHECK_SQL.format(
        suggestion=CategorySuggestion._meta.db_table, image=ListingImage._meta.db_table
    ).strip()
