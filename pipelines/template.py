"""The Flex Template entry: ``python -m pipelines.template --date=2026-11-30 --input_root=gs://...``.

Dataflow's Flex Template launcher passes only ``--name=value`` pairs: the template's
parameters (``deploy/flex-template/metadata.json``) and its own pipeline options
(``--project``, ``--region``, ``--temp_location``, ``--staging_location``, ``--job_name``
...). ``to_score_argv`` turns the parameters into ``beamscore score`` flags
(``--input_root`` is ``--input-root``, ``--force=true`` is ``--force=true``) and leaves the
rest to Beam; ``main`` then calls the same ``run(argv)`` as ``beamscore score``, with
the bundled ``dataflow`` overlay unless ``--config`` names another. Which options are
parameters, with their labels and regexes, is ``pipelines.template_metadata``'s.
"""

from __future__ import annotations

import sys
import textwrap

from pipelines.orchestration.logs import setup_logging
from pipelines.orchestration.score import run
from pipelines.template_metadata import hidden, options, parameters

USAGE = "usage: python -m pipelines.template [--PARAMETER=VALUE ...] [BEAM OPTION ...]"
INTRO = (
    "The Flex Template entry: scores tranches as `beamscore score` does, with the bundled "
    "dataflow config overlay unless config= names another. The launcher passes each "
    "template parameter as --NAME=VALUE (gcloud: --parameters NAME=VALUE,NAME=VALUE); "
    "every other --name=value is a Beam pipeline option.")


def template_help(width: int = 88) -> str:
    """The entry's help, in template parameter names (``input_root=``)."""
    lines = [USAGE, "", *textwrap.wrap(INTRO, width), "",
             "template parameters (deploy/flex-template/metadata.json):"]
    for p in parameters():
        lines.append(f"  {p.name}={p.metavar}")
        lines += textwrap.wrap(p.help, width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    lines += ["", "not template parameters (set in the config overlay):",
              *textwrap.wrap(", ".join(sorted(hidden())), width, initial_indent="  ",
                             subsequent_indent="  ")]
    return "\n".join(lines) + "\n"


def to_score_argv(argv: list[str]) -> list[str]:
    """Template ``--name=value`` pairs -> ``beamscore score`` arguments."""
    flags = options()
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else (arg, "", "")
        flag = flags.get(name)
        if flag is None:
            out.append(arg)  # a Beam option of the launcher's
        else:
            out.append(f"{flag}={value}" if eq else flag)
    if not any(a == "--config" or a.startswith("--config=") for a in out):
        out.append("--config=dataflow")
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(template_help(), end="")
        return 0
    setup_logging(False)
    return run(to_score_argv(args))


if __name__ == "__main__":
    sys.exit(main())
