"""A generated corpus with realistic class imbalance for tracking's false-alert tests:
20 classes with Zipf priors (the largest about 28% of documents, the smallest about 1%),
each with its own topic words mixed into shared words, so a TF-IDF model is good but not
perfect. A model is trained on one split; the reference profile and the tranches are
held out from it (the reference is what the scoring model does on unseen data)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from tracking.profile import Profile

CLASSES = [f"section-{i:02d}" for i in range(20)]
_PRIORS = 1 / np.arange(1, 21) ** 1.1
PRIORS = _PRIORS / _PRIORS.sum()
_SHARED = [f"w{i}" for i in range(1500)]
_SHARED_P = 1 / np.arange(1, 1501) ** 1.05
_SHARED_P /= _SHARED_P.sum()


_TOPIC_WORDS = np.array([f"t{c}x{j}" for c in range(len(CLASSES)) for j in range(40)],
                        dtype=object)
_SHARED_WORDS = np.array(_SHARED, dtype=object)


def documents(n: int, seed: int, priors: np.ndarray = PRIORS) -> tuple[list[str], list[str]]:
    """``n`` texts and labels drawn from ``priors``: each text 15 to 79 words, a quarter
    of them (on average) its class's topic words, the rest shared words."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(CLASSES), n, p=priors)
    lengths = rng.integers(15, 80, n)
    total = int(lengths.sum())
    topic = rng.random(total) < 0.25
    topic_words = _TOPIC_WORDS[np.repeat(labels, lengths) * 40 + rng.integers(0, 40, total)]
    words = np.where(topic, topic_words,
                     _SHARED_WORDS[rng.choice(len(_SHARED), total, p=_SHARED_P)])
    texts = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
    return texts, [CLASSES[c] for c in labels]


@dataclass(frozen=True)
class Tracked:
    model: Any
    reference: Profile


@lru_cache(maxsize=1)
def tracked() -> Tracked:
    """A model trained on 4,000 documents and its reference profile on 4,000 others."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from models.behaviour import reference_profile

    texts, labels = documents(4000, seed=1)
    model = Pipeline([("tfidf", TfidfVectorizer(sublinear_tf=True)),
                      ("clf", LogisticRegression(C=10, max_iter=300))]).fit(texts, labels)
    ref_texts, ref_labels = documents(4000, seed=2)
    reference, _ = reference_profile(model, ref_texts, ref_labels)
    return Tracked(model, Profile.from_json(reference.to_json()))


def tranche(model: Any, n: int, seed: int, priors: np.ndarray = PRIORS,
            labelled: bool = True) -> Profile:
    """The profile of a scored tranche of ``n`` held-out documents."""
    from models.behaviour import reference_profile

    texts, labels = documents(n, seed, priors)
    profile, _ = reference_profile(model, texts, labels if labelled else None)
    return profile
