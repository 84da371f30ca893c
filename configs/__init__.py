"""Bundled configuration files: ``base.yaml`` plus one overlay per environment.

This package only ships YAML; ``pipelines.configuration.config`` reads it with
importlib.resources and holds the defaults, which the files do not repeat. Secrets never
live here: database passwords come from the environment.
"""
