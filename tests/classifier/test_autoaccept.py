"""The auto-accept rule and the policy a head records in its manifest."""

from __future__ import annotations

import numpy as np

from classifier.autoaccept import AutoAcceptPolicy, auto_accepted
from classifier.head import GateParameters, LinearHead


def test_a_suggestion_at_or_above_its_category_threshold_is_accepted() -> None:
    thresholds = {"shoes": 0.8}
    assert auto_accepted("shoes", 0.8, thresholds)
    assert auto_accepted("shoes", 0.95, thresholds)
    assert not auto_accepted("shoes", 0.7999, thresholds)
    # a category without a threshold never auto-accepts, however confident
    assert not auto_accepted("hat", 1.0, thresholds)


def _head(policy: AutoAcceptPolicy | None = None) -> LinearHead:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(2, 8)).astype(np.float32)
    extra = {} if policy is None else {"auto_accept": policy}
    return LinearHead(
        version="v",
        backbone_version="bb",
        classes=["hat", "shoes"],
        weights=weights,
        bias=np.zeros(2, np.float32),
        centroids=weights,
        temperature=1.0,
        feature_transform="sqrt-l2",
        gate=GateParameters(cosine_threshold=0.5, cosine_weight=10.0),
        **extra,  # type: ignore[arg-type]
    )


def test_the_policy_travels_with_the_head_artifact() -> None:
    # given a head with thresholds for one category, chosen for precision 0.97
    policy = AutoAcceptPolicy(
        target_precision=0.97, thresholds={"shoes": 0.81}, sources={"shoes": "own"}, calibration="validation"
    )
    manifest, payload = _head(policy).to_bytes()

    # when it is read back from its manifest and arrays
    loaded = LinearHead.from_bytes(manifest, payload).auto_accept

    # then the same policy comes back, and it applies the same rule
    assert loaded == policy
    assert loaded.accepts("shoes", 0.81) and not loaded.accepts("hat", 0.99)


def test_a_manifest_from_before_policies_keeps_its_recorded_thresholds() -> None:
    # given a manifest that recorded its thresholds under its metrics only
    manifest, payload = _head().to_bytes()
    del manifest["auto_accept"]
    manifest["metrics"] = {"auto_accept_thresholds": {"hat": 0.9}}

    # then they are its thresholds, with no recorded target
    policy = LinearHead.from_bytes(manifest, payload).auto_accept
    assert policy.thresholds == {"hat": 0.9} and policy.target_precision is None
    # and a head without either never auto-accepts
    assert _head().auto_accept.thresholds == {}
