"""Model registry and the default training recipe. Never imports ``pipelines``."""
