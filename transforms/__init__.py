"""Beam transforms of the scoring pipeline: one composite PTransform per step (read,
validate, score, write, summarise) and the vocabulary they share (``records``)."""
