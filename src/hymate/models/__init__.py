"""Models only (no run loops): HyMaTE, the neural baselines, the tabular models and their features, and the registry of names."""
