"""Training: the config, datasets, the built-in recipe and its scores, user scripts, retrains, plots."""
