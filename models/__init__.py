"""Models: the registry (the one place that verifies an artifact), the training recipe,
text preprocessing, prediction helpers and the vectorised featuriser."""
