"""Explanations of HyMaTE's predictions: its own attention weights (per stay and over a cohort),
Integrated Gradients for comparison, deletion tests of both, and figures and HTML reports."""
