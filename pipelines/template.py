"""The Flex Template entry: ``python -m pipelines.template --date=2026-11-30 --input_root=gs://...``.

Dataflow's Flex Template launcher passes only ``--name=value`` pairs: the template's
parameters (``deploy/flex-template/metadata.json``) and its own pipeline options
(``--project``, ``--region``, ``--temp_location``, ``--staging_location``, ``--job_name``
...). ``to_score_argv`` turns the parameters into ``beamscore score`` flags
(``--input_root`` is ``--input-root``, ``--force=true`` is ``--force``) and leaves the
rest to Beam; ``main`` then calls the same ``run(argv)`` as ``beamscore score``, with
the bundled ``dataflow`` overlay unless ``--config`` names another.
"""

from __future__ import annotations

import dataclasses
import sys

from pipelines.configuration.config import TrackingConfig
from pipelines.orchestration.logs import setup_logging
from pipelines.orchestration.score import run, score_parser

# Options of the entry point that metadata.json deliberately does not offer as template
# parameters, and why.
HIDDEN = {
    "workers": "local worker processes: Dataflow sizes its own workers",
    "local_engine": "the local engine only",
    "progress_seconds": "operational tuning, set in the config overlay",
    "read_chunk_bytes": "operational tuning, set in the config overlay",
    "sink_batch_bytes": "operational tuning, set in the config overlay",
    "sink_statement_timeout_ms": "operational tuning, set in the config overlay",
    "sink_max_retries": "operational tuning, set in the config overlay",
    "sink_lease_seconds": "operational tuning, set in the config overlay",
    "sink_detached_lease_seconds": "operational tuning, set in the config overlay",
    "sink_state_dir": "the machine-local limiter; on Dataflow use sink_redis_url",
    "validation_max_payload_chars": "operational tuning, set in the config overlay",
    "inference_allow_sklearn_mismatch": "unsafe: to be set in a reviewed overlay only",
    "inference_allow_pickle": "unsafe: to be set in a reviewed overlay only",
    "inference_fast_text_features": "a speed switch with identical results",
    "preprocessing_nfkc": "training only: scoring applies the model's preprocessing",
    "preprocessing_strip_control": "training only: scoring applies the model's preprocessing",
    "preprocessing_strip_html": "training only: scoring applies the model's preprocessing",
    "preprocessing_collapse_whitespace": "training only: scoring applies the model's "
                                         "preprocessing",
    "preprocessing_lowercase": "training only: scoring applies the model's preprocessing",
    "preprocessing_truncate_chars": "training only: scoring applies the model's preprocessing",
    "runner": "always DataflowRunner in a Flex Template",
    "dataflow_project": "given by the launcher as --project",
    "dataflow_region": "given by the launcher as --region",
    "dataflow_temp_location": "given by the launcher as --temp_location",
    "dataflow_staging_location": "given by the launcher as --staging_location",
    "dataflow_service_account_email": "given by the launcher as --service_account_email",
    "dataflow_machine_type": "given by the launcher as --worker_machine_type",
    "dataflow_max_num_workers": "given by the launcher as --max_num_workers",
    "dataflow_sdk_container_image": "the template's own image",
    "dataflow_setup_file": "the template's image holds the package",
    "dataflow_number_of_worker_harness_threads": "set in the config overlay",
    "dataflow_experiments": "given by the launcher as --additional_experiments",
    **{f"tracking_{f.name}": "the tracking policy: set in the config overlay"
       for f in dataclasses.fields(TrackingConfig)},
}


def options() -> dict[str, str]:
    """Every option of the entry point: template name -> ``beamscore score`` flag."""
    out = {}
    for action in score_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                out[flag[2:].replace("-", "_")] = flag
    return out


def to_score_argv(argv: list[str]) -> list[str]:
    """Template ``--name=value`` pairs -> ``beamscore score`` arguments."""
    flags = options()
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else (arg, "", "")
        flag = flags.get(name)
        if flag is None:
            out.append(arg)  # a Beam option of the launcher's
        elif flag == "--force":
            if value.lower() in ("", "true", "1", "yes"):
                out.append(flag)
        else:
            out.append(f"{flag}={value}" if eq else flag)
    if not any(a == "--config" or a.startswith("--config=") for a in out):
        out.append("--config=dataflow")
    return out


def main(argv: list[str] | None = None) -> int:
    setup_logging(False)
    return run(to_score_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
