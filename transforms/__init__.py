"""Beam transforms of the scoring pipeline: one composite PTransform per step (read,
validate, infer, write, record the outcome) and the vocabulary they share (``records``)."""
