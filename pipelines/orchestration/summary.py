"""What ``beamscore score`` and ``beamscore plan`` print: the run summary and the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from landing.tranches import Unscored
from models.registry import ModelRef
from pipelines.orchestration.plan import EMPTY, ScorePlan
from store.ledger import BUSY, MISSING, SKIP
from transforms.outcome import accounted_for, dead_share


@dataclass
class RunOutcome:
    run_id: str  # "" when nothing was run
    summary: dict[str, Any] | None
    wall_seconds: float
    plan: ScorePlan
    ref: ModelRef
    model_loads: int | None = None
    retrain: Any = None  # the retraining request this run made (store.monitoring.Trigger)
    report: str = ""  # where its report was written
    staged: bool = False  # a job staged for a template launcher: it finishes the run itself
    tracking_failures: int = 0  # what tracking could not do (transforms.track; logged)


def plan_summary(plan: ScorePlan, ref: ModelRef) -> dict[str, Any]:
    """What the launch decided, kept in the run's summary: the model, per tranche the
    decision, its reason, the entries it never scores and the links it refused, and the
    entries under the input root never scored."""
    return {"model": f"{ref.name}:{ref.version}", "plan": {
        t.tranche: {"decision": plan.decisions[t.tranche][0],
                    "detail": plan.decisions[t.tranche][1], "files": len(t.files),
                    "ignored": t.ignored, "unscored": _entries(t.unscored),
                    "refused": _entries(t.refused)}
        for t in plan.tranches}, "unscored": _entries(plan.root_unscored)}


def _entries(entries: list[Unscored]) -> list[dict[str, str]]:
    return [{"path": u.path, "why": u.why} for u in entries]


def format_summary(outcome: RunOutcome, max_ratio: float | None = None) -> str:
    """The summary printed after a run; ``max_ratio``: ``max_dead_letter_ratio``, to
    mark a tranche left failed for its dead letters (``OVER RATIO``)."""
    s = outcome.summary or {}
    lines = []
    status = s.get("status", "unknown")
    if outcome.staged:
        status = (f"{status} (the staged job does nothing)" if outcome.summary else
                  "running: job staged for the template launcher, which submits it; the "
                  f"job records the summary (beamscore runs show {outcome.run_id})")
    if outcome.run_id:
        lines.append(f"run {outcome.run_id}  model {outcome.ref.name}:{outcome.ref.version}  "
                     f"status {status}")
    lines.append(f"{'tranche':<12}{'read':>10}{'valid':>10}{'scored':>10}{'dead':>8}"
                 f"{'written':>10}  check")
    for tranche, c in (s.get("tranches") or {}).items():
        ok = ("MISMATCH" if not accounted_for(c) else
              "CHANGED" if c.get("input_changed") else
              "OVER RATIO" if max_ratio is not None and dead_share(c) > max_ratio else "ok")
        lines.append(f"{tranche:<12}{c['read']:>10}{c['valid']:>10}{c['scored']:>10}"
                     f"{c['dead_lettered']:>8}{c['written']:>10}  {ok}")
        if c.get("unread_estimate"):
            lines.append(f"{'':<12}  and about {c['unread_estimate']:,} record(s) never read "
                         "in unreadable file parts (estimated; in the dead-letter ratio)")
    for decision in (SKIP, BUSY, MISSING, EMPTY):
        for t in outcome.plan.with_decision(decision):
            lines.append(f"{t.tranche:<12}  {decision}: {outcome.plan.decisions[t.tranche][1]}")
    lines += _unscored_lines(outcome.plan)
    total = s.get("total") or {}
    docs = total.get("read", 0)
    rate = docs / outcome.wall_seconds if outcome.wall_seconds else 0.0
    lines.append(
        f"{'total':<12}{docs:>10}{total.get('valid', 0):>10}{total.get('scored', 0):>10}"
        f"{total.get('dead_lettered', 0):>8}{total.get('written', 0):>10}"
    )
    rate_limited = (f"rate-limited {total['rate_limited_ms'] / 1000:.1f}s  "
                    if "rate_limited_ms" in total else "")  # only when a limit is set
    lines.append(f"wall time {outcome.wall_seconds:.1f}s  {rate:,.0f} docs/s  "
                 f"dead-letter ratio {s.get('dead_letter_ratio', 0):.4f}  {rate_limited}"
                 f"waited for database {total.get('db_wait_ms', 0) / 1000:.1f}s"
                 + (f"  model loads {outcome.model_loads}" if outcome.model_loads else ""))
    if outcome.tracking_failures:
        lines.append(f"tracking failed {outcome.tracking_failures} time(s): some figures are "
                     "missing (the log says which); the scores stand")
    if outcome.report:
        lines.append(f"report {outcome.report}")
    return "\n".join(lines)


def _unscored_lines(plan: ScorePlan) -> list[str]:
    lines = []
    for t in plan.tranches:
        if t.ignored:
            lines.append(f"{t.tranche:<12}  ignored {len(t.ignored)} file(s) that are not "
                         f"input: {', '.join(_name(p) for p in t.ignored[:5])}"
                         + (" ..." if len(t.ignored) > 5 else ""))
        if t.refused:
            lines.append(f"{t.tranche:<12}  refused {len(t.refused)} file(s) it never "
                         "opens (beamscore plan says why): one dead letter each")
    if plan.unscored:
        lines.append(f"unscored: {len(plan.unscored)} entr"
                     f"{'y' if len(plan.unscored) == 1 else 'ies'} under input_root will "
                     "never be scored (beamscore plan lists them, with why)")
    return lines


def _name(path: str) -> str:
    """The last part of ``path``, ``x/`` for a folder ``.../x/``; the path itself if it
    has no such part."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if not last:
        return path
    return f"{last}/" if path.endswith("/") else last


def format_plan(plan: ScorePlan, model: str) -> str:
    lines = []
    for t in plan.tranches:
        decision, detail = plan.decisions[t.tranche]
        if t.missing:
            lines.append(f"{t.tranche}  {decision}  {detail}")
        else:
            lines.append(f"{t.tranche}  {decision}  ({detail})  {len(t.files)} file(s), "
                         f"{t.total_bytes:,} bytes")
        for f in t.files:
            lines.append(f"    {f.format:<9}{f.size:>14,}  {f.path}")
        for r in t.refused:
            lines.append(f"    refused  {r.path}: {r.why} (one dead letter)")
        for u in t.unscored:
            lines.append(f"    ignored  {u.path}: {u.why}")
        if t.unscored:
            lines.append(f"    {len(t.unscored)} file(s) ignored: never scored")
    for u in plan.root_unscored:
        lines.append(f"never scored  {u.path}: {u.why}")
    if plan.unscored:
        lines.append(f"{len(plan.unscored)} entr{'y' if len(plan.unscored) == 1 else 'ies'} "
                     "under input_root will never be scored")
    lines.append(f"model {model}")
    lines.append(f"{len(plan.chunks)} chunk(s) to read in {len(plan.tasks)} task(s)")
    return "\n".join(lines)
