"""One ``--flag`` per config key, with one line of help each (``beamscore ... --help``
lists them under "configuration"), and the overrides the flags given make."""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.configuration.config import LEAVES, flag_for

_METAVARS = {int: "N", float: "X", bool: "true|false", str: "TEXT", list[str]: "A,B"}

KEY_HELP = {
    "runner": "Beam runner: a name (FnApiRunner, DataflowRunner, PortableRunner ...) or a "
              "class path",
    "input_root": "root of the dt=YYYY-MM-DD tranche folders, local or gs://",
    "output_dir": "where Parquet predictions, JSONL dead letters and run summaries go",
    "registry": "model registry root, local or gs://",
    "db": "sqlite:///relative/path, sqlite:////absolute/path or "
          "postgresql://user@host:port/db (never a password)",
    "model": "NAME (its production alias, else the newest), NAME:VERSION or NAME:ALIAS",
    "workers": "local worker processes",
    "batch_size": "documents per batch through read, validation, inference and write",
    "max_dead_letter_ratio": "exit 4, and leave a tranche failed, above this share of "
                             "dead letters",
    "force": "rescore tranches the ledger has completed",
    "progress_seconds": "log job-wide progress (and each worker's) at least this often "
                        "(seconds)",
    "local_engine": "workers > 1 on FnApiRunner: fork (from a pre-imported server) or "
                    "spawn (Beam's multi_processing)",
    "fields.id": "input field holding the document id (default: the model's)",
    "fields.text": "input field holding the text (default: the model's)",
    "fields.label": "input field holding a true label, if any (default: the model's)",
    "fields.metadata": "input fields carried to the outputs' metadata column",
    "validation.max_text_chars": "dead-letter texts longer than this",
    "validation.max_payload_chars": "raw payload kept in a dead letter",
    "preprocessing.nfkc": "train: Unicode NFKC normalisation",
    "preprocessing.strip_control": "train: remove control characters",
    "preprocessing.strip_html": "train: replace HTML tags with a space",
    "preprocessing.collapse_whitespace": "train: collapse runs of whitespace",
    "preprocessing.lowercase": "train: lowercase the text",
    "preprocessing.truncate_chars": "train: cut preprocessed text to this length (0 = no cut)",
    "inference.top_k": "labels kept in each prediction's top_k list",
    "inference.allow_sklearn_mismatch": "load a model pickled by another scikit-learn version",
    "inference.timeout_seconds": "time limit of scoring a full batch of batch_size records, "
                                 "shared out per record (0 = none)",
    "inference.timeout_ms_per_record": "time limit per record: n records get n times it "
                                       "(0 = none)",
    "inference.trusted_types": "module.Class names a model artifact may use beyond "
                               "scikit-learn, numpy and scipy",
    "inference.allow_pickle": "unpickle model artifacts without the allow-list (unsafe)",
    "inference.fast_text_features": "vectorised featurisation for word n-gram TF-IDF models",
    "read.chunk_bytes": "largest byte range of an uncompressed JSONL file one worker reads",
    "sink.batch_rows": "rows buffered per database write",
    "sink.batch_bytes": "bytes buffered per database write",
    "sink.max_rows_per_second": "rows per second for the whole job (0 = unlimited)",
    "sink.max_connections": "concurrent database connections for the whole job",
    "sink.statement_timeout_ms": "statement and lock timeout",
    "sink.max_retries": "retries of a transient database error",
    "sink.password_env": "environment variable that holds the database password",
    "sink.redis_url": "Redis for a job-wide rate limit and connection cap (several machines)",
    "sink.lease_seconds": "tranche lease of a run, renewed every quarter of it",
    "sink.detached_lease_seconds": "tranche lease of a run whose launcher does not wait for "
                                   "its job (a Flex Template launch); the job frees it at its "
                                   "end",
    "sink.state_dir": "directory of this machine's limiter state (default <temp>/beamscore)",
    "tracking.enabled": "profile every tranche against the model's reference and store the "
                        "metrics",
    "tracking.min_records": "below this many scored records a drift metric is insufficient",
    "tracking.min_labelled": "below this many labels accuracy is insufficient",
    "tracking.accuracy_drop": "alert when accuracy's upper bound is below the reference's "
                              "minus this",
    "tracking.psi": "alert at this population stability index of the class shares",
    "tracking.js_distance": "alert at this Jensen-Shannon distance of the class shares",
    "tracking.linf": "alert at this largest difference of a class share",
    "tracking.ks": "alert at this Kolmogorov-Smirnov statistic of the scores",
    "tracking.wasserstein": "alert at this Wasserstein distance of the scores",
    "tracking.length_ks": "alert at this Kolmogorov-Smirnov statistic of text length and "
                          "tokens",
    "tracking.oov_increase": "alert when the out-of-vocabulary share exceeds the reference's "
                             "by this",
    "tracking.empty_increase": "alert when the share emptied by preprocessing exceeds the "
                               "reference's by this",
    "tracking.importance_ndcg": "alert below this nDCG@50 of the top features (reference "
                               "importance as relevance)",
    "tracking.significance": "a drift alert also needs a p-value below this",
    "tracking.min_expected": "classes expected fewer times than this are merged for PSI "
                             "and the chi-square test",
    "tracking.consecutive": "runs in a row a drift alert must last to request retraining",
    "tracking.cooldown_hours": "no new retraining request for the model within this time",
    "tracking.command": "command run when retraining is requested (shell)",
    "tracking.labelled_sample": "share of labelled records, by id hash, used for accuracy",
    "tracking.report_runs": "runs in the report's history charts",
    "tracking.permutation_rows": "rows of each batch permuted for the importance of a "
                                 "model without coefficients",
    "schedule.timezone": "time zone whose yesterday a run without --date scores (IANA name)",
    "dataflow.project": "Google Cloud project (Beam --project)",
    "dataflow.region": "Dataflow region (Beam --region)",
    "dataflow.temp_location": "gs:// path for temporary files (Beam --temp_location)",
    "dataflow.staging_location": "gs:// path for staged packages (Beam --staging_location)",
    "dataflow.service_account_email": "the workers' service account",
    "dataflow.machine_type": "worker machine type, e.g. n2-standard-4",
    "dataflow.max_num_workers": "most worker VMs (also shares out the rate limit)",
    "dataflow.sdk_container_image": "the workers' container image (this repository's "
                                    "Dockerfile)",
    "dataflow.setup_file": "setup.py to install on the workers instead of an image",
    "dataflow.number_of_worker_harness_threads": "threads per worker VM (0 = Beam's default)",
    "dataflow.experiments": "Dataflow experiments, comma-separated",
}


def add_config_flags(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Add ``--config`` and one flag per config leaf (default None = not given), all
    under one heading."""
    group = parser.add_argument_group(
        "configuration", "each flag overrides the config key it is named after "
        "(configs/base.yaml holds every key with its default)")
    group.add_argument("--config", metavar="NAME_OR_FILE",
                       help="bundled overlay (local, dataflow) or a YAML file; default local")
    for key in LEAVES:
        if key in skip:
            continue
        group.add_argument(flag_for(key), dest=f"cfg:{key}", default=None,
                           metavar=_METAVARS.get(LEAVES[key], "VALUE"),
                           help=f"{KEY_HELP[key]} [{key}]")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k[len("cfg:"):]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None
    }
