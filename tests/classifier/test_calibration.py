"""Held-out figures and auto-accept thresholds, on synthetic scores with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.calibration import (
    auto_accept_policy,
    auto_accept_summary,
    auto_accept_thresholds,
    category_reports,
    confusion_matrix,
    evaluation_metrics,
    expected_calibration_error,
    precision_lower_bound,
    reliability_bins,
)


def test_threshold_is_the_lowest_confidence_that_keeps_the_precision() -> None:
    # given 10 "shoes" predictions, best first; the 4th and the 8th are wrong
    confidence = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90]
    true = ["shoes"] * 3 + ["hat"] + ["shoes"] * 3 + ["hat"] + ["shoes"] * 2
    predicted = ["shoes"] * 10

    # when thresholds are chosen for precision 0.8, 0.75 and 1.0
    at_80 = auto_accept_thresholds(true, predicted, confidence, precision=0.8, level=None)
    at_75 = auto_accept_thresholds(true, predicted, confidence, precision=0.75, level=None)
    at_100 = auto_accept_thresholds(true, predicted, confidence, precision=1.0, level=None)

    # then precision 0.8 holds down to 0.90 (8/10 right), 1.0 only above the first mistake
    assert at_80 == {"shoes": 0.90}
    assert at_75 == {"shoes": 0.90}
    assert at_100 == {"shoes": 0.97}


def test_the_lowest_qualifying_threshold_wins_even_when_precision_dips_above_it() -> None:
    # given precision 1/1 at 0.9, 1/2 at 0.8, then 3/4 at 0.6
    true = ["a", "b", "a", "a"]
    predicted = ["a", "a", "a", "a"]
    confidence = [0.9, 0.8, 0.7, 0.6]

    # when the target is 0.75
    thresholds = auto_accept_thresholds(true, predicted, confidence, precision=0.75, level=None)

    # then the threshold is 0.6 (3 of 4 accepted right), the lowest at which precision holds
    assert thresholds == {"a": 0.6}


def test_tied_confidences_are_accepted_together() -> None:
    # given two predictions tied at 0.8, one right and one wrong, above one right at 0.9
    true = ["a", "a", "b"]
    predicted = ["a", "a", "a"]
    confidence = [0.9, 0.8, 0.8]

    # when precision 0.7 is asked for
    thresholds = auto_accept_thresholds(true, predicted, confidence, precision=0.7, level=None)

    # then 0.8 would accept both tied ones (2/3 < 0.7), so the threshold stays at 0.9
    assert thresholds == {"a": 0.9}


def test_a_category_without_enough_support_gets_no_threshold() -> None:
    # given "hat" predicted right twice and "shoes" right five times
    true = ["hat", "hat"] + ["shoes"] * 5
    predicted = list(true)
    confidence = [0.99, 0.98, 0.9, 0.8, 0.7, 0.6, 0.5]

    # when at least 3 accepted predictions are required
    thresholds = auto_accept_thresholds(
        true, predicted, confidence, precision=0.97, min_support=3, level=None
    )

    # then only shoes has a threshold, the lowest of its five
    assert thresholds == {"shoes": 0.5}


def test_a_category_that_never_reaches_the_precision_is_absent() -> None:
    # given "bags" predicted twice, both wrong
    thresholds = auto_accept_thresholds(
        ["hat", "hat"], ["bags", "bags"], [0.99, 0.5], precision=0.5, level=None
    )

    # then bags is never auto-accepted
    assert thresholds == {}


def test_summary_counts_coverage_and_precision_exactly() -> None:
    # given four photos and thresholds for "a" only
    true = ["a", "a", "b", "b"]
    predicted = ["a", "a", "a", "b"]
    confidence = [0.9, 0.6, 0.95, 0.99]

    # when the summary is taken at a threshold of 0.8 for "a"
    summary = auto_accept_summary(true, predicted, confidence, {"a": 0.8})

    # then two photos (0.9 right, 0.95 wrong) are accepted of four: coverage 0.5, precision 0.5
    assert (summary.photos, summary.accepted, summary.correct) == (4, 2, 1)
    assert summary.coverage == 0.5
    assert summary.precision == 0.5


def test_reliability_bins_and_expected_calibration_error() -> None:
    # given confidences in two bins: (0.2, 0.3] and (0.9, 1.0]
    correct = [False, True, True, True, False]
    confidence = [0.25, 0.25, 0.95, 0.95, 1.0]

    # when binned in tenths
    bins = reliability_bins(correct, confidence, bins=10)

    # then the photos fall in bins 2 and 9 with exact means, and ECE weights their gaps
    assert [b.count for b in bins] == [0, 0, 2, 0, 0, 0, 0, 0, 0, 3]
    assert bins[2].accuracy == 0.5 and bins[2].confidence == pytest.approx(0.25)
    assert bins[9].accuracy == pytest.approx(2 / 3) and bins[9].confidence == pytest.approx(2.9 / 3)
    expected = 2 / 5 * abs(0.5 - 0.25) + 3 / 5 * abs(2 / 3 - 2.9 / 3)
    assert expected_calibration_error(bins) == pytest.approx(expected)


def test_per_category_figures_and_confusion_matrix() -> None:
    # given three classes and a zero-shot prediction outside them
    true = ["a", "a", "b", "c"]
    predicted = ["a", "b", "b", "bags"]

    # when reported
    reports = category_reports(true, predicted, ["a", "b", "c"])
    matrix = confusion_matrix(true, predicted, ["a", "b", "c"])

    # then precision, recall and F1 are exact, and "bags" lands in the last column
    assert (reports["a"].precision, reports["a"].recall) == (1.0, 0.5)
    assert reports["a"].f1 == pytest.approx(2 / 3)
    assert (reports["b"].precision, reports["b"].recall, reports["b"].support) == (0.5, 1.0, 1)
    assert (reports["c"].precision, reports["c"].recall, reports["c"].f1) == (0.0, 0.0, 0.0)
    assert matrix == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]


def test_evaluation_metrics_are_json_ready() -> None:
    # given a tiny evaluation
    metrics = evaluation_metrics(
        ["a", "b"], ["a", "a"], [0.9, 0.6], classes=["a", "b"], thresholds={"a": 0.8}
    )

    # then it holds every figure a model version records
    assert metrics["n"] == 2
    assert metrics["accuracy"] == 0.5
    assert set(metrics) == {
        "n",
        "accuracy",
        "macro_f1",
        "per_category",
        "confusion",
        "reliability",
        "ece",
        "auto_accept",
    }
    auto_accept = metrics["auto_accept"]
    assert isinstance(auto_accept, dict)
    assert auto_accept["accepted"] == 1 and auto_accept["precision"] == 1.0


def test_the_lower_confidence_bound_is_the_exact_clopper_pearson_one() -> None:
    # given 99 right of 99, 0 of 10, and 97 of 100
    bounds = precision_lower_bound(np.array([99, 0, 97]), np.array([99, 10, 100]))

    # then the one-sided 95 % bounds are 0.05 ** (1 / 99), 0 and the beta quantile
    assert bounds[0] == pytest.approx(0.05 ** (1 / 99))
    assert bounds[1] == 0.0
    assert bounds[2] == pytest.approx(0.9243, abs=1e-4)


def test_a_threshold_needs_its_lower_confidence_bound_to_reach_the_target() -> None:
    # given 120 "shoes" predictions, all right above 0.5, then 30 more with 3 mistakes
    confidence = np.linspace(0.99, 0.5, 120).tolist() + np.linspace(0.49, 0.2, 30).tolist()
    true = ["shoes"] * 130 + ["hat", "shoes", "shoes", "hat", "shoes", "hat"] + ["shoes"] * 14
    predicted = ["shoes"] * 150

    # when thresholds are chosen for precision 0.97
    measured = auto_accept_thresholds(true, predicted, confidence, precision=0.97, level=None)
    bounded = auto_accept_thresholds(true, predicted, confidence, precision=0.97)

    # then the measured share reaches 0.97 down to the last photo (147/150 = 0.98), while the
    # 95 % bound holds only while few enough mistakes are accepted
    assert measured == {"shoes": pytest.approx(0.2)}
    accepted = sum(c >= bounded["shoes"] for c in confidence)
    right = sum(c >= bounded["shoes"] and t == "shoes" for c, t in zip(confidence, true, strict=True))
    assert precision_lower_bound(right, accepted) >= 0.97
    assert 99 <= accepted < 150
    # and a category supported by a few dozen right photos gets none, however clean
    assert auto_accept_thresholds(["hat"] * 40, ["hat"] * 40, [0.99] * 40, precision=0.97) == {}


def test_categories_that_fail_alone_inherit_their_parents_pooled_threshold() -> None:
    # given "shoes" with 150 right predictions of its own, and "hat" and "skirt" (both under
    # "fashion") with 60 right each; "phones" (another branch) with 20 right
    true = ["shoes"] * 150 + ["hat"] * 60 + ["skirt"] * 60 + ["phones"] * 20
    predicted = list(true)
    confidence = [0.95] * 150 + [0.9] * 60 + [0.8] * 60 + [0.99] * 20
    parents = {"shoes": "fashion", "hat": "fashion", "skirt": "fashion", "phones": "electronics"}

    # when the policy is chosen for precision 0.97
    policy = auto_accept_policy(
        true,
        predicted,
        confidence,
        classes=["shoes", "hat", "skirt", "phones", "dress"],
        parent_of={**parents, "fashion": None, "electronics": None},
        precision=0.97,
    )

    # then shoes keeps its own threshold; hat and skirt share the threshold of their pool (120
    # right photos clear the bound); phones' pool is too small and dress was never predicted
    assert policy.thresholds == {"hat": 0.8, "shoes": 0.95, "skirt": 0.8}
    assert policy.sources == {"hat": "fashion", "shoes": "own", "skirt": "fashion"}
    assert policy.target_precision == 0.97 and policy.confidence_level == 0.95
    # and the rule accepts by those thresholds
    assert policy.accepts("hat", 0.8) and not policy.accepts("phones", 0.99)


def test_the_summary_applies_the_served_rule() -> None:
    # given thresholds for "a" only
    summary = auto_accept_summary(["a", "b", "b"], ["a", "b", "a"], [0.8, 0.99, 0.79], {"a": 0.8})

    # then only the top-1 of "a" at or above 0.8 counts
    assert (summary.accepted, summary.correct) == (1, 1)
