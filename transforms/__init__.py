"""Beam transforms of the scoring pipeline. Never imports ``pipelines``."""
