"""The readers' property on generated and mutated PhysioNet trees (a bounded profile; the long one
is benchmarks/fuzz.py). A failure prints the smallest tree hypothesis found."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzz.records import outcome, p12_tree, p19_tree

PROFILE = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@PROFILE
@given(p12_tree())
def test_physionet2012_reader_holds_the_property(tree):
    outcome("physionet2012", tree)


@PROFILE
@given(p19_tree())
def test_physionet2019_reader_holds_the_property(tree):
    outcome("physionet2019", tree)
