"""Training runs: the run lifecycle, training and its job, versions, promotion, comparison, starting points."""
