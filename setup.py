"""Packaging for beamscore.

This is the file Dataflow's ``--setup_file`` installs on workers, so runtime
dependencies live here, pinned where a version mismatch breaks a run: Beam must be
identical on the launcher and workers, and scikit-learn must match the version a
model artifact was pickled with (the registry refuses a mismatch).
"""

from setuptools import setup

BEAM_VERSION = "2.77.0"

setup(
    name="beamscore",
    version="0.1.0",
    description="Batch scoring of document tranches with scikit-learn models on Apache Beam",
    python_requires=">=3.10",
    packages=["pipelines", "pipelines.commands", "pipelines.orchestration",
              "pipelines.configuration", "transforms", "models", "store", "store.backends",
              "landing", "engine", "tracking", "configs"],
    package_data={"configs": ["*.yaml"]},
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "pyarrow>=18",
        "scikit-learn==1.9.1",
        "joblib>=1.4",
        "google-cloud-storage>=2.18",
        "pandas>=2.2",
        "psycopg[binary]>=3.2",
        "PyYAML>=6.0",
        "scipy>=1.11",
        "datasketches>=5.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        "redis": ["redis>=5"],
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.6",  # make test runs the suite on 2 workers
            "ruff>=0.8",
            "mypy>=1.13",
            "types-PyYAML",
            "gcp-storage-emulator>=2024.8.3",
            "redis>=5",
            "pyinstrument>=4",
            "import-linter>=2.1",
            "hypothesis>=6.100",
            "setuptools>=65",  # tests/pipelines/test_portable.py builds the sdist
            "mkdocs>=1.6",  # make docs
        ],
    },
    entry_points={"console_scripts": ["beamscore=pipelines.cli:console_main"]},
)
