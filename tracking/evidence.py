"""What a tranche's metrics are computed from, and the comparisons several metrics share.

``Evidence`` holds one tranche's inputs: in the pipeline, its ``Profile`` and the model's
reference profile; at the launcher, the run's record counts of the tranche and its dead
letters by reason; in both, the reference-only figures (accuracy, share emptied by
preprocessing, importance ranking) and the tracking policy. A comparison that more than
one metric uses (the class-share test, a Kolmogorov-Smirnov test, the importance ranking,
the new out-of-vocabulary tokens)
is computed once per tranche and kept here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from tracking import oov, statistics
from tracking.oov import NewToken
from tracking.policy import IMPORTANCE_TOP, TrackingPolicy

if TYPE_CHECKING:
    from tracking.profile import Profile

Names = Callable[[list[int]], list[str]]


@dataclass(frozen=True)
class ClassShares:
    """The tranche's class shares against the reference's, every class its own, and the
    test of the hypothesis that they are the same (``statistics.share_test``)."""

    observed: np.ndarray  # shares of the tranche
    expected: np.ndarray  # shares of the reference
    p_value: float  # the test of the counts
    floor: float  # the smallest p-value that test could give at the tranche's size


@dataclass(frozen=True)
class Ranking:
    """The tranche's feature importance against the reference's top features."""

    mine: np.ndarray  # mean importance per feature in the tranche
    columns: list[int]  # the features compared
    ref_value: dict[int, float]  # reference importance of its top features
    ref_name: dict[int, str]
    top: list[int]  # the reference's top IMPORTANCE_TOP features, in its order
    n: int  # records importance was measured on

    def ndcg(self) -> float:
        """nDCG@50 of the tranche's top features, the reference's importance as relevance
        (1 = the tranche ranks first what matters most in the reference); NaN when an
        importance is not finite (a model with NaN or infinite weights)."""
        relevance = [self.ref_value.get(i, 0.0) for i in self.columns]
        scores = [float(self.mine[i]) for i in self.columns]
        if not np.isfinite(relevance + scores).all():
            return float("nan")
        return statistics.ndcg(relevance, scores, IMPORTANCE_TOP)

    def tau(self) -> float:
        """Kendall's tau over the reference's top 50 (NaN, as ``ndcg``)."""
        ref, mine = [self.ref_value[i] for i in self.top], [float(self.mine[i]) for i in self.top]
        if not np.isfinite(ref + mine).all():
            return float("nan")
        return statistics.kendall_tau(ref, mine)


@dataclass(eq=False)
class Evidence:
    policy: TrackingPolicy
    profile: Profile | None = None
    reference: Profile | None = None
    names: Names | None = None  # feature names of column indices
    figures: Mapping[str, Any] = field(default_factory=dict)  # reference-only figures
    counts: Mapping[str, int] = field(default_factory=dict)  # the run's, of the tranche
    dead_letters: Sequence[tuple[str, str, int]] = ()  # (stage, reason, records)
    _ks: dict[str, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def of_tranche(cls, t: Profile, ref: Profile | None, policy: TrackingPolicy,
                   names: Names | None = None) -> Evidence:
        return cls(policy, t, ref, names, ref.reference if ref is not None else {})

    @property
    def t(self) -> Profile:
        if self.profile is None:
            raise ValueError("a tranche's profile is compared in the pipeline only")
        return self.profile

    @property
    def ref(self) -> Profile:
        if self.reference is None:
            raise ValueError("no reference profile")
        return self.reference

    @property
    def compared(self) -> bool:
        """Whether the tranche and the reference both have scored records."""
        return self.reference is not None and bool(self.reference.n) and bool(self.t.n)

    @property
    def scores_compared(self) -> bool:
        return self.reference is not None and bool(self.reference.score.n) \
            and bool(self.t.score.n)

    @cached_property
    def class_shares(self) -> ClassShares:
        t, q = self.t, self.ref.class_counts / self.ref.n
        p_value, floor = statistics.share_test(t.class_counts, q, self.ref.n,
                                               self.policy.min_expected)
        return ClassShares(t.class_counts / t.n, q, p_value, floor)

    def ks(self, sketch: str) -> tuple[float, float]:
        """(D, p-value) of the tranche's sketch ``sketch`` (a ``Profile`` attribute)
        against the reference's."""
        if sketch not in self._ks:
            self._ks[sketch] = statistics.ks_between(getattr(self.t, sketch),
                                                     getattr(self.ref, sketch))
        return self._ks[sketch]

    @cached_property
    def new_tokens(self) -> list[NewToken]:
        """The tranche's new out-of-vocabulary tokens (``tracking.oov``); none unless
        both profiles count their tokens."""
        if not self.compared or self.t.oov_tokens is None or self.ref.oov_tokens is None:
            return []
        return oov.new_tokens(self.t.oov_tokens, self.t.n, self.ref.oov_tokens, self.ref.n)

    @cached_property
    def ranking(self) -> Ranking | None:
        """None without importance in the tranche or a ranking in the reference.
        Permutation importance is measured on the reference's top features only, so only
        those are compared."""
        mine = self.t.importance()
        top_ref = self.figures.get("importance_top") or []
        if self.figures.get("importance_kind") == "permutation":
            top_ref = top_ref[:IMPORTANCE_TOP]
        if mine is None or not top_ref:
            return None
        ref_value = {int(i): float(v) for i, _, v in top_ref}
        columns = sorted(set(ref_value) if len(top_ref) <= IMPORTANCE_TOP else
                         set(np.argsort(-mine, kind="stable")[:200].tolist()) | set(ref_value))
        every = self.reference.importance_all if self.reference is not None else None
        if every is not None:  # the reference's value of every feature compared
            ref_value |= {i: float(every[i]) for i in columns if i < len(every)}
        return Ranking(mine, columns, ref_value, {int(i): str(name) for i, name, _ in top_ref},
                       [int(i) for i, _, _ in top_ref[:IMPORTANCE_TOP]],
                       self.t.importance_rows)
