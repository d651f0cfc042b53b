"""The detectors with their default configuration on a labelled synthetic workload.

A smaller run of ``python -m observatory.detectors.evaluate``: one workload
with incidents of every kind, one incident-free, both with the daily cycle,
noise and heavy tails.
"""

import pytest

from observatory.detectors.evaluate import REPORT_KINDS, evaluate


@pytest.fixture(scope="module")
def report():
    return evaluate(seeds=(0,), quiet_seeds=(100,), days=1.5, quiet_days=1.0, incidents_per_kind=16)


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_precision_and_recall_per_kind(report, kind):
    score = report.scores[kind]
    assert score.incidents >= 8, report.table()
    assert score.recall >= 0.9, report.table()
    assert score.precision >= 0.9, report.table()
    assert max(score.delays) <= 2


def test_no_alert_on_the_incident_free_day(report):
    assert {kind: s.quiet_alerts for kind, s in report.scores.items()} == dict.fromkeys(
        REPORT_KINDS, 0
    ), report.table()
