"""Model tracking: mergeable profiles of scored data (counts and sketches, never rows),
the catalogue of metrics that compare a tranche with the model's reference, and the
alert policy. Plain Python, numpy, scipy and Apache DataSketches; no Beam."""
