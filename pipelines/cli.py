"""The ``beamscore`` command line: train, models, score, plan, db.

Exit codes: 0 success; 1 launch or configuration error; 2 usage error; 3 some
requested tranche is missing (the others are still scored); 4 the dead-letter share
exceeded ``max_dead_letter_ratio``; 5 some tranche is being scored by another run (lease
held), the others are still scored. Tranches the ledger already completed with the same
inputs and model version are skipped (exit 0); ``--force`` rescores them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import logging
import os
import re
import sys
import threading
from typing import Any

from models.registry import ModelRegistry, RegistryError
from pipelines.config import Config, ConfigError, add_config_flags, load_config, overrides_from_args
from pipelines.score import LaunchError, ScorePlan, execute, format_summary, make_plan
from transforms.db import connect, redact
from transforms.ledger import BUSY, SKIP

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISSING, EXIT_DEAD_LETTERS, EXIT_BUSY = 0, 1, 2, 3, 4, 5
_LOG = logging.getLogger("beamscore")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        # Beam logs type-hint conversions and worker internals at INFO; keep its warnings,
        # and the lines beamscore's own code logs inside local worker processes.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        forwarded = logging.getLogger(WORKER_LOGGER)
        forwarded.setLevel(logging.INFO)
        if worker_log_filter not in forwarded.filters:
            forwarded.addFilter(worker_log_filter)
        for handler in logging.getLogger().handlers:
            if _drop_resource_warning not in handler.filters:
                handler.addFilter(_drop_resource_warning)


WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_OWN_CODE = re.compile(r'log_location: "[^"]*/(?:transforms|models|pipelines)/[^"]*"')
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


def worker_log_filter(record: logging.LogRecord) -> bool:
    """Keep forwarded worker lines logged by beamscore's code, as ``worker: <message>``.

    Local worker processes send their logs to the launcher, which re-logs each entry
    as protobuf text; Beam's own worker chatter is dropped unless it is a warning.
    """
    text = record.getMessage()
    if not text.startswith("Worker: "):
        return True
    own = _OWN_CODE.search(text)
    if not own and record.levelno < logging.WARNING:
        return False
    match = _MESSAGE.search(text)
    if match:
        record.msg, record.args = "worker: %s", (match.group(1).encode().decode(
            "unicode_escape", errors="replace"),)
    return True


_HARMLESS = (
    # RunInference asks for process memory on every load; harmless where unsupported.
    "Resource module is not available",
    # FnApiRunner's advice for its own modes; the fork server provides the workers.
    "direct_running_mode should be `multi_processing`",
    # Local workers have no semi-persistent directory; nothing of ours needs one.
    "No semi_persistent_directory found",
)


def _drop_resource_warning(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(h in message for h in _HARMLESS)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beamscore", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="fit the default recipe and register a version")
    tr.add_argument("--docs", required=True, help="glob of labelled JSONL/Parquet/CSV files")
    tr.add_argument("--name", required=True, help="model name in the registry")
    tr.add_argument("--text-field", dest="cfg:fields.text", default=None)
    tr.add_argument("--label-field", dest="cfg:fields.label", default=None)
    add_config_flags(tr, skip={"fields.text", "fields.label", "force"})

    models = sub.add_parser("models", help="model registry").add_subparsers(
        dest="models_command", required=True)
    reg = models.add_parser("register", help="adopt a scikit-learn joblib file")
    reg.add_argument("--file", required=True)
    reg.add_argument("--name", required=True)
    add_config_flags(reg, skip={"force"})
    ls = models.add_parser("list", help="names, versions, aliases")
    add_config_flags(ls, skip={"force"})
    pr = models.add_parser("promote", help="alias a version as production")
    pr.add_argument("name")
    pr.add_argument("version")
    add_config_flags(pr, skip={"force"})

    for name, help_text in (("score", "score tranches"),
                            ("plan", "list what score would read; runs nothing")):
        sp = sub.add_parser(name, help=help_text)
        when = sp.add_mutually_exclusive_group()
        when.add_argument("--date", type=_date, help="one tranche (default: yesterday, UTC)")
        when.add_argument("--from", dest="date_from", type=_date, help="first tranche of a range")
        sp.add_argument("--to", dest="date_to", type=_date, help="last tranche of a range")
        sp.add_argument("--force", dest="cfg:force", action="store_const", const=True,
                        default=None, help="rescore tranches the ledger has completed")
        add_config_flags(sp, skip={"force"})

    db = sub.add_parser("db", help="database administration").add_subparsers(
        dest="db_command", required=True)
    init = db.add_parser("init", help="create or migrate the schema ahead of a run")
    add_config_flags(init, skip={"force"})
    return parser


def _dates(args: argparse.Namespace) -> list[dt.date]:
    from transforms.read import date_range

    if args.date_from or args.date_to:
        if not (args.date_from and args.date_to):
            raise ConfigError("--from and --to go together")
        return date_range(args.date_from, args.date_to)
    return [args.date or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    _setup_logging(args.verbose)
    if extra and args.command != "score":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [a for a in extra if a.startswith("-") and not a.startswith("--")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    try:
        cfg = load_config(args.config, overrides_from_args(args))
        if extra:
            _check_beam_args(extra, parser)
        return _dispatch(args, cfg, extra)
    except (ConfigError, RegistryError, LaunchError, FileNotFoundError, ValueError) as exc:
        print(f"beamscore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a failed pipeline: the run is marked failed
        _LOG.debug("run failed", exc_info=True)
        print(f"beamscore: error: run failed: {type(exc).__name__}: {str(exc)[:2000]}",
              file=sys.stderr)
        return EXIT_ERROR


def _check_beam_args(extra: list[str], parser: argparse.ArgumentParser) -> None:
    """Flags beamscore does not know must be Beam pipeline options: no silent typos."""
    from apache_beam.options.pipeline_options import PipelineOptions

    beam_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_subclasses(PipelineOptions):
        try:
            cls._add_argparse_args(beam_parser)
        except argparse.ArgumentError:
            continue  # an option two classes both declare
    _, unknown = beam_parser.parse_known_args(extra)
    if unknown:
        parser.error(f"unrecognized arguments (neither beamscore nor Beam options): "
                     f"{' '.join(unknown)}")


def _all_subclasses(cls: Any) -> list[Any]:
    out: list[Any] = []
    sub: Any
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def _dispatch(args: argparse.Namespace, cfg: Config, beam_args: list[str]) -> int:
    registry = ModelRegistry(cfg.registry)
    if args.command == "train":
        from pipelines.train import train

        ref = train(cfg, args.docs, args.name)
        _LOG.info("registered %s:%s metrics=%s", ref.name, ref.version, ref.metadata["metrics"])
        print(ref.version)
        return EXIT_OK
    if args.command == "models":
        return _models(args, cfg, registry)
    if args.command == "db":
        db = connect(cfg.db, password_env=cfg.sink.password_env)
        try:
            db.init_schema()
        finally:
            db.close()
        print(f"schema ready in {redact(cfg.db)}")
        return EXIT_OK
    if args.command == "plan":
        plan = make_plan(cfg, _dates(args), registry.resolve(cfg.model), read_only=True)
        print(_format_plan(plan))
        return EXIT_MISSING if plan.missing else EXIT_OK
    outcome = execute(cfg, _dates(args), beam_args)
    print(format_summary(outcome))
    plan = outcome.plan
    if not outcome.run_id and plan.with_decision(SKIP):
        print("beamscore: nothing to do: every tranche is already scored with this model "
              "and these inputs (use --force to rescore)", file=sys.stderr)
    if outcome.summary and outcome.summary.get("status") == "dead_letter_ratio_exceeded":
        print(f"beamscore: dead-letter ratio {outcome.summary['dead_letter_ratio']:.4f} exceeds "
              f"max_dead_letter_ratio={cfg.max_dead_letter_ratio}", file=sys.stderr)
        return EXIT_DEAD_LETTERS
    if plan.missing:
        print("beamscore: missing tranche(s): " + ", ".join(t.tranche for t in plan.missing),
              file=sys.stderr)
        return EXIT_MISSING
    if plan.with_decision(BUSY):
        print("beamscore: tranche(s) being scored by another run, left to it: "
              + ", ".join(t.tranche for t in plan.with_decision(BUSY)), file=sys.stderr)
        return EXIT_BUSY
    return EXIT_OK


def _models(args: argparse.Namespace, cfg: Config, registry: ModelRegistry) -> int:
    if args.models_command == "register":
        ref = registry.register_file(args.name, args.file,
                                     preprocessing=cfg.preprocessing.to_dict())
        print(ref.version)
    elif args.models_command == "promote":
        registry.promote(args.name, args.version)
        print(f"{args.name}:{args.version} is now production")
    else:
        rows: list[dict[str, Any]] = []
        for name in registry.names():
            aliases = registry.aliases(name)
            for version in registry.versions(name):
                meta = registry.metadata(name, version)
                tags = ",".join(a for a, v in aliases.items() if v == version)
                rows.append({"name": name, "version": version, "aliases": tags,
                             "created_at": meta.get("created_at", ""),
                             "accuracy": meta.get("metrics", {}).get("accuracy", ""),
                             "sha256": meta["sha256"][:12]})
        print(f"{'NAME':<20}{'VERSION':>8}  {'ALIASES':<12}{'CREATED':<27}{'ACCURACY':>9}  SHA256")
        for r in rows:
            print(f"{r['name']:<20}{r['version']:>8}  {r['aliases']:<12}{r['created_at']:<27}"
                  f"{r['accuracy']!s:>9}  {r['sha256']}")
    return EXIT_OK


def _format_plan(plan: ScorePlan) -> str:
    lines = []
    for t in plan.tranches:
        decision, detail = plan.decisions[t.tranche]
        if t.missing:
            lines.append(f"{t.tranche}  {decision}  {detail}")
            continue
        lines.append(f"{t.tranche}  {decision}  ({detail})  {len(t.files)} file(s), "
                     f"{t.total_bytes:,} bytes")
        for f in t.files:
            lines.append(f"    {f.format:<9}{f.size:>14,}  {f.path}")
        for path in t.ignored:
            lines.append(f"    ignored  {path}")
    lines.append(f"{len(plan.chunks)} chunk(s) to read")
    return "\n".join(lines)


def console_main() -> None:
    """The ``beamscore`` console script: ``main``, then a fast exit.

    Tearing down an interpreter that holds Beam, pandas, pyarrow and scikit-learn takes
    about 0.5 s here (module and object deallocation) and changes nothing on disk. Once
    ``main`` has returned, and only if no other non-daemon thread is still running, the
    atexit handlers run, the output streams and logging are flushed, and the process
    exits with ``os._exit``. Library callers and tests call ``main`` and keep the
    normal shutdown.
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
