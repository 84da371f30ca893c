"""The ``beamscore`` command line: train, models, score, plan, runs, report, db.

``score`` is ``pipelines.orchestration.score.run``; the other commands are small and live here. Exit
codes are listed in ``pipelines.orchestration.exit_codes``. Tranches the ledger already completed
with the same inputs and model version are skipped (exit 0); ``--force`` rescores them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import Any

from models.registry import ModelRegistry
from models.unpickle import Policy
from pipelines.commands.runs import list_runs, release_run, show_run
from pipelines.configuration.config import Config, load_config
from pipelines.configuration.connection import opened
from pipelines.configuration.flags import add_config_flags, overrides_from_args
from pipelines.orchestration.exit_codes import EXIT_BUSY, EXIT_MISSING, EXIT_OK, guarded
from pipelines.orchestration.launch import with_model_fields
from pipelines.orchestration.logs import setup_logging
from pipelines.orchestration.plan import make_plan
from pipelines.orchestration.score import add_run_arguments, requested_dates, run
from pipelines.orchestration.summary import format_plan
from store.database import redact
from store.ledger import BUSY

_LOG = logging.getLogger("beamscore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beamscore", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="fit the default recipe and register a version")
    tr.add_argument("--docs", required=True, metavar="GLOB",
                    help="labelled JSONL, CSV or Parquet files, local or gs://")
    tr.add_argument("--name", required=True, help="model name in the registry")
    for f in ("id", "text", "label"):
        tr.add_argument(f"--{f}-field", dest=f"cfg:fields.{f}", default=None, metavar="FIELD",
                        help=f"input field of the {f} (recorded in the model; "
                             f"default {f})")
    add_config_flags(tr, skip={"fields.id", "fields.text", "fields.label", "force"})

    models = sub.add_parser("models", help="model registry").add_subparsers(
        dest="models_command", required=True)
    reg = models.add_parser("register", help="adopt a scikit-learn joblib file")
    reg.add_argument("--file", required=True, metavar="PATH",
                     help="a joblib file of a fitted pipeline that takes raw texts")
    reg.add_argument("--name", required=True, help="model name in the registry")
    reg.add_argument("--trust", action="append", default=[], metavar="MODULE.CLASS",
                     help="a class of your own the artifact may use (repeatable; scoring "
                          "needs it in inference.trusted_types too)")
    reg.add_argument("--allow-pickle", action="store_true",
                     help="unpickle the file without the allow-list (it can run any code)")
    reg.add_argument("--reference", metavar="GLOB",
                     help="documents (labelled or not) the model's reference profile is "
                          "made of, for tracking")
    add_config_flags(reg, skip={"force", "inference.trusted_types", "inference.allow_pickle"})
    ls = models.add_parser("list", help="names, versions, aliases")
    add_config_flags(ls, skip={"force"})
    pr = models.add_parser("promote", help="alias a version as production")
    pr.add_argument("name", help="model name")
    pr.add_argument("version", help="version to alias as production")
    add_config_flags(pr, skip={"force"})

    add_run_arguments(sub.add_parser("score", help="score tranches"))
    add_run_arguments(sub.add_parser("plan", help="list what score would read; runs nothing"))

    runs_cmd = sub.add_parser("runs", help="runs recorded in the database").add_subparsers(
        dest="runs_command", required=True)
    rl = runs_cmd.add_parser("list", help="the latest runs, newest first")
    rl.add_argument("--limit", type=int, default=20, metavar="N", help="runs to list (20)")
    add_config_flags(rl, skip={"force"})
    rs = runs_cmd.add_parser("show", help="a run's summary, dead letters, model and config")
    rs.add_argument("run_id", help="the run")
    add_config_flags(rs, skip={"force"})
    rr = runs_cmd.add_parser("release", help="mark a run failed and free its tranche leases")
    rr.add_argument("run_id", help="the run")
    rr.add_argument("--force", dest="release_force", action="store_true",
                    help="release it even if its process is alive on this host")
    add_config_flags(rr, skip={"force"})

    rp = sub.add_parser("report", help="write a run's HTML report from its monitoring rows")
    rp.add_argument("run_id", help="the run")
    rp.add_argument("--output", metavar="FILE.html",
                    help="where to write it (default <output_dir>/_reports/RUN_ID.html)")
    add_config_flags(rp, skip={"force"})

    db = sub.add_parser("db", help="database administration").add_subparsers(
        dest="db_command", required=True)
    add_config_flags(db.add_parser("init", help="create or migrate the schema ahead of a run"),
                     skip={"force"})
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    setup_logging(args.verbose)
    if args.command == "score":
        return run(argv[argv.index("score") + 1:])
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return guarded(lambda: _dispatch(args, load_config(args.config, overrides_from_args(args))))


def _dispatch(args: argparse.Namespace, cfg: Config) -> int:
    if args.command == "train":
        from pipelines.commands.train import train

        ref = train(cfg, args.docs, args.name)
        _LOG.info("registered %s:%s metrics=%s", ref.name, ref.version, ref.metadata["metrics"])
        print(ref.version)
        return EXIT_OK
    if args.command == "models":
        return _models(args, cfg, ModelRegistry(cfg.registry))
    if args.command == "runs":
        return _runs(args, cfg)
    if args.command == "report":
        from pipelines.orchestration.report import write_report

        print(write_report(cfg, args.run_id, args.output))
        return EXIT_OK
    if args.command == "db":
        with opened(cfg, migrate=True):
            pass
        print(f"schema ready in {redact(cfg.db)}")
        return EXIT_OK
    ref = ModelRegistry(cfg.registry).resolve(cfg.model)
    cfg = with_model_fields(cfg, ref)
    plan = make_plan(cfg, requested_dates(args, cfg.schedule.timezone), ref, read_only=True)
    print(format_plan(plan, f"{ref.name}:{ref.version}"))
    if plan.missing:
        return EXIT_MISSING
    return EXIT_BUSY if plan.with_decision(BUSY) else EXIT_OK


def _runs(args: argparse.Namespace, cfg: Config) -> int:
    if args.runs_command == "list":
        print(list_runs(cfg, args.limit))
        return EXIT_OK
    if args.runs_command == "show":
        print(show_run(cfg, args.run_id))
        return EXIT_OK
    code, message = release_run(cfg, args.run_id, args.release_force)
    print(message if code == EXIT_OK else f"beamscore: error: {message}",
          file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def _models(args: argparse.Namespace, cfg: Config, registry: ModelRegistry) -> int:
    if args.models_command == "register":
        fields = {f"{k}_field": getattr(cfg.fields, k) for k in ("id", "text", "label")}
        if args.allow_pickle:
            _LOG.warning("--allow-pickle: %s is unpickled without the allow-list", args.file)
        from pipelines.commands.train import reference_from_glob

        reference = reference_from_glob(cfg, args.reference) if args.reference else None
        ref = registry.register_file(args.name, args.file,
                                     preprocessing=cfg.preprocessing.to_dict(), extra=fields,
                                     policy=Policy(args.trust, args.allow_pickle),
                                     reference=reference)
        print(ref.version)
    elif args.models_command == "promote":
        registry.promote(args.name, args.version)
        print(f"{args.name}:{args.version} is now production")
    else:
        print(_format_models(registry))
    return EXIT_OK


def _format_models(registry: ModelRegistry) -> str:
    lines = [f"{'NAME':<20}{'VERSION':>8}  {'ALIASES':<12}{'CREATED':<27}{'ACCURACY':>9}  SHA256"]
    for name in registry.names():
        aliases = registry.aliases(name)
        for version in registry.versions(name):
            meta: dict[str, Any] = registry.metadata(name, version)
            tags = ",".join(a for a, v in aliases.items() if v == version)
            accuracy = meta.get("metrics", {}).get("accuracy", "")
            lines.append(f"{name:<20}{version:>8}  {tags:<12}{meta.get('created_at', ''):<27}"
                         f"{accuracy!s:>9}  {meta['sha256'][:12]}")
    return "\n".join(lines)


def console_main() -> None:
    """The ``beamscore`` console script: ``main``, then a fast exit.

    Tearing down an interpreter that holds Beam, pandas, pyarrow and scikit-learn takes
    a noticeable fraction of a second (module and object deallocation) and changes
    nothing on disk. Once ``main`` has returned, and only if no other non-daemon thread
    is still running, the atexit handlers run, the output streams and logging are
    flushed, and the process exits with ``os._exit``. Library callers and tests call
    ``main`` and keep the normal shutdown.
    """
    code = main()
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
