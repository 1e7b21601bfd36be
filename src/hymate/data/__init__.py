"""Data: readers of the raw layouts into one event model, the data location and cache, normalisation, and the sample type every task uses."""
