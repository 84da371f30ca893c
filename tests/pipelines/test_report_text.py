"""The report's words about new out-of-vocabulary tokens: named with their documents,
share of the tranches where they are new and example ids, summed over the run's
tranches; a run whose rows have
none (or were stored without them) gets no such line."""

from __future__ import annotations

from typing import Any

from pipelines.orchestration.report_text import new_tokens, summary
from tracking.oov import example_slice


def _row(tranche: str, metric: str, slice_: str, value: float, n: int,
         status: str = "ok") -> dict[str, Any]:
    return {"tranche": tranche, "metric": metric, "slice": slice_, "value": value, "n": n,
            "ci_low": None, "ci_high": None, "threshold": 0.0, "status": status}


ROWS = [_row("d1", "class_share", "a", 0.5, 1000), _row("d1", "class_share", "b", 0.5, 1000),
        _row("d2", "class_share", "a", 0.5, 3000), _row("d2", "class_share", "b", 0.5, 3000),
        _row("d1", "oov_token", "zorblax", 0.1, 100), _row("d2", "oov_token", "zorblax", 0.1, 300),
        _row("d2", "oov_token", "blip<b>", 0.01, 30),
        _row("d2", "oov_token_example", example_slice("zorblax", "doc-7"), 0.0, 300),
        _row("d1", "oov_token_example", example_slice("zorblax", "doc-3"), 0.0, 100),
        _row("d1", "oov_token_example", example_slice("zorblax", "doc-9"), 1.0, 100),
        _row("d2", "oov_share", "", 0.2, 3000, "alert")]


def test_new_tokens_are_summed_over_the_runs_tranches_with_their_example_ids() -> None:
    """A token's share is of the documents of the tranches where it is new."""
    assert new_tokens(ROWS) == [("zorblax", 400, 0.1, ["doc-3", "doc-7"]),
                                ("blip<b>", 30, 0.01, [])]
    page = summary(ROWS)
    assert ("<li class='alert'>Top new out-of-vocabulary tokens: <code>zorblax</code> "
            "(400 docs, share 10.0% where new, e.g. doc ids doc-3, doc-7); "
            "<code>blip&lt;b&gt;</code> (30 docs, share 1.0% where new).</li>") in page


def test_a_run_without_token_rows_says_nothing_of_them() -> None:
    old = [r for r in ROWS if not r["metric"].startswith("oov_token")]
    assert new_tokens(old) == [] and "new out-of-vocabulary" not in summary(old)


def test_a_sentence_quotes_the_alerting_tranche_never_one_too_small_to_judge() -> None:
    """A 1-record tranche's KS of 0.81 is insufficient, another tranche's 0.67 alerts:
    the sentence quotes 0.67 and is an alert; with no alert, the judged row is quoted."""
    hist = [_row(d, m, "0.9-1.0", 1.0, 10) for d in ("d1", "d2")
            for m in ("score_histogram", "score_histogram_reference")]
    ks = [_row("d1", "score_ks", "", 0.81, 1, "insufficient"),
          _row("d2", "score_ks", "", 0.67, 300, "alert"),
          _row("d3", "score_ks", "", 0.10, 300, "ok")]
    page = summary(hist + ks)
    assert "(Kolmogorov-Smirnov 0.67).</li>" in page and "<li class='alert'>Mean conf" in page
    calm = summary(hist + [ks[0], ks[2]])
    assert "(Kolmogorov-Smirnov 0.10).</li>" in calm and "<li class=''>Mean conf" in calm
