"""Entry points: CLI, configuration, and the pipeline builders."""
