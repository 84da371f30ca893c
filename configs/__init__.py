"""Bundled configuration files: ``base.yaml`` plus one overlay per environment.

This package only ships YAML; ``pipelines.configuration.config`` reads it with importlib.resources.
Secrets never live here: database passwords come from the environment.
"""
