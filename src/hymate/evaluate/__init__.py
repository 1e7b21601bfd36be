"""Evaluation: metrics of every label type with bootstrap CIs, calibration, selection scores, reports, comparison tables, the P19 utility."""
