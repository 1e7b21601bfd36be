"""Training: the one Lightning module, the estimators behind one fit / predict interface, the one run loop, and the benchmark grid."""
