"""``beamscore train`` and ``beamscore models register | list | promote``: their
arguments and what each does. Training and registering read the registry, the input
fields and the preprocessing settings; listing and promoting only the registry."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pipelines.commands.common import add_config_keys, command_config, keys_of
from pipelines.orchestration.exit_codes import EXIT_OK

_LOG = logging.getLogger("beamscore")
_FIELDS = ("id", "text", "label")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", required=True, metavar="GLOB",
                        help="labelled JSONL, CSV or Parquet files, local or gs://")
    parser.add_argument("--name", required=True, help="model name in the registry")
    for f in _FIELDS:
        parser.add_argument(f"--{f}-field", dest=f"cfg:fields.{f}", default=None,
                            metavar="FIELD",
                            help=f"input field of the {f} (recorded in the model; default {f})")
    add_config_keys(parser, keys_of("registry", "preprocessing"))
    parser.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    from pipelines.commands.train import train as fit_and_register

    cfg = command_config(args)
    ref = fit_and_register(cfg.registry, cfg.fields, cfg.preprocessing, args.docs, args.name)
    _LOG.info("registered %s:%s metrics=%s", ref.name, ref.version, ref.metadata["metrics"])
    print(ref.version)
    return EXIT_OK


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    reg = sub.add_parser("register", help="adopt a scikit-learn joblib file",
                         description="Adopt a scikit-learn joblib file as a new version.")
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
    add_config_keys(reg, keys_of("registry", "fields", "preprocessing"))
    reg.set_defaults(handler=register)
    ls = sub.add_parser("list", help="names, versions, aliases",
                        description="Every model's versions, aliases and metrics.")
    add_config_keys(ls, keys_of("registry"))
    ls.set_defaults(handler=list_models)
    pr = sub.add_parser("promote", help="alias a version as production",
                        description="Alias a version as production.")
    pr.add_argument("name", help="model name")
    pr.add_argument("version", help="version to alias as production")
    add_config_keys(pr, keys_of("registry"))
    pr.set_defaults(handler=promote)


def register(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry
    from models.unpickle import Policy
    from pipelines.commands.train import reference_from_glob

    cfg = command_config(args)
    fields = {f"{k}_field": getattr(cfg.fields, k) for k in _FIELDS}
    if args.allow_pickle:
        _LOG.warning("--allow-pickle: %s is unpickled without the allow-list", args.file)
    reference = (reference_from_glob(cfg.fields, cfg.preprocessing, args.reference)
                 if args.reference else None)
    ref = ModelRegistry(cfg.registry).register_file(
        args.name, args.file, preprocessing=cfg.preprocessing.to_dict(), extra=fields,
        policy=Policy(args.trust, args.allow_pickle), reference=reference)
    print(ref.version)
    return EXIT_OK


def promote(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry

    ModelRegistry(command_config(args).registry).promote(args.name, args.version)
    print(f"{args.name}:{args.version} is now production")
    return EXIT_OK


def list_models(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry

    registry = ModelRegistry(command_config(args).registry)
    lines = [f"{'NAME':<20}{'VERSION':>8}  {'ALIASES':<12}{'CREATED':<27}{'ACCURACY':>9}  SHA256"]
    for name in registry.names():
        aliases = registry.aliases(name)
        for version in registry.versions(name):
            meta: dict[str, Any] = registry.metadata(name, version)
            tags = ",".join(a for a, v in aliases.items() if v == version)
            accuracy = meta.get("metrics", {}).get("accuracy", "")
            lines.append(f"{name:<20}{version:>8}  {tags:<12}{meta.get('created_at', ''):<27}"
                         f"{accuracy!s:>9}  {meta['sha256'][:12]}")
    print("\n".join(lines))
    return EXIT_OK
