"""Auto-accept: when a suggestion may set a listing's category without a person.

Every model version carries an ``AutoAcceptPolicy``: the precision it promises
(``target_precision``, e.g. 0.97) and, per category, the lowest confidence at which that promise
was shown to hold on photos no training step saw (``thresholds``: ``{slug: confidence}``). A
category absent from ``thresholds`` never auto-accepts. How thresholds are chosen (a one-sided
lower confidence bound on precision, with a fallback to the parent category's pool) is
``classifier.calibration.auto_accept_policy``.

``auto_accepted`` is the rule itself: the suggestion's top-1 category is accepted when its
confidence is at or above that category's threshold. Stdlib only: evaluation, calibration and
the workers' registry rows all read thresholds through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: One-sided confidence level of the lower bound on precision that a threshold must clear.
CONFIDENCE_LEVEL = 0.95
#: The bound used: exact binomial (Clopper–Pearson).
BOUND_METHOD = "clopper-pearson"


def auto_accepted(slug: str, confidence: float, thresholds: Mapping[str, float]) -> bool:
    """Whether a top-1 suggestion of ``slug`` at ``confidence`` (in [0, 1]) sets the category:
    True when ``slug`` has a threshold and ``confidence`` is at or above it."""
    threshold = thresholds.get(slug)
    return threshold is not None and float(confidence) >= float(threshold)


@dataclass(frozen=True)
class AutoAcceptPolicy:
    """Per-category thresholds and the precision they were chosen for.

    ``target_precision``: in (0, 1], or None for a version recorded before targets were stored.
    ``thresholds``: ``{slug: lowest accepted confidence}``. ``confidence_level`` and ``method``:
    how the lower bound on precision was computed. ``sources``: ``{slug: "own" | "<parent slug>"}``,
    whether the category's own predictions cleared the bound or it inherited the pooled threshold
    of its parent's categories. ``calibration``: where the held-out predictions came from (text).
    """

    target_precision: float | None
    thresholds: dict[str, float] = field(default_factory=dict)
    confidence_level: float = CONFIDENCE_LEVEL
    method: str = BOUND_METHOD
    sources: dict[str, str] = field(default_factory=dict)
    calibration: str = ""

    def accepts(self, slug: str, confidence: float) -> bool:
        """``auto_accepted`` under this policy's thresholds."""
        return auto_accepted(slug, confidence, self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in a head's manifest under ``auto_accept``."""
        return {
            "target_precision": self.target_precision,
            "confidence_level": self.confidence_level,
            "method": self.method,
            "thresholds": dict(sorted(self.thresholds.items())),
            "sources": dict(sorted(self.sources.items())),
            "calibration": self.calibration,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> AutoAcceptPolicy:
        """The policy recorded in a head manifest: its ``auto_accept`` entry, or, for manifests
        written before it existed, the thresholds under ``metrics.auto_accept_thresholds`` with
        no recorded target. An empty policy (never accepts) when neither is present."""
        entry = manifest.get("auto_accept")
        if isinstance(entry, Mapping):
            return cls(
                target_precision=entry.get("target_precision"),
                thresholds={str(k): float(v) for k, v in (entry.get("thresholds") or {}).items()},
                confidence_level=float(entry.get("confidence_level", CONFIDENCE_LEVEL)),
                method=str(entry.get("method", BOUND_METHOD)),
                sources={str(k): str(v) for k, v in (entry.get("sources") or {}).items()},
                calibration=str(entry.get("calibration", "")),
            )
        legacy = (manifest.get("metrics") or {}).get("auto_accept_thresholds") or {}
        return cls(target_precision=None, thresholds={str(k): float(v) for k, v in legacy.items()})
