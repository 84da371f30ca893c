"""A reference made of a model's own training documents is refused; one that merely
shares the duplicates any held-out sample shares is not; in-sample accuracy warns."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from models.provenance import (
    TRAINING_ATTRIBUTE,
    ReferenceOverlapError,
    check_reference,
    in_sample_warning,
    overlap,
    text_hashes,
    training_record,
)

TRAINING = [f"package {i} does thing {i % 7}" for i in range(1000)] + ["Transitional package"] * 50


def _model(accuracy: float | None = 0.8) -> SimpleNamespace:
    model = SimpleNamespace()
    setattr(model, TRAINING_ATTRIBUTE, training_record(TRAINING, {"accuracy": accuracy}))
    return model


def test_hashes_ignore_case_and_spacing_only() -> None:
    a, b, c = text_hashes(["Hello  World", "hello world\n", "hello worlds"])
    assert a == b != c


def test_the_training_record_is_compact_and_knows_its_duplicates() -> None:
    record = training_record(TRAINING, {"accuracy": 0.8})
    assert len(record["text_hashes"]) == 1001 and record["text_hashes"].dtype == np.uint64
    assert record["repeated_share"] == pytest.approx(50 / 1050)


def test_the_training_documents_as_reference_are_refused() -> None:
    with pytest.raises(ReferenceOverlapError, match="1050 of 1050 reference documents"):
        check_reference(_model(), TRAINING)
    half = TRAINING[:300] + [f"new text {i}" for i in range(300)]
    with pytest.raises(ReferenceOverlapError, match="not trained on"):
        check_reference(_model(), half)


def test_held_out_documents_with_common_duplicates_are_accepted() -> None:
    held_out = [f"another package {i}" for i in range(380)] + ["transitional PACKAGE"] * 20
    assert check_reference(_model(), held_out) == 20
    assert overlap(_model().beamscore_training_, held_out).sum() == 20


def test_a_model_not_made_by_train_has_nothing_to_check() -> None:
    assert check_reference(SimpleNamespace(), TRAINING) == 0


def test_an_in_sample_looking_accuracy_is_warned_about() -> None:
    assert "far above the model's held-out accuracy 0.800" in str(
        in_sample_warning(_model(0.8), 0.991, 1000))
    assert in_sample_warning(_model(0.8), 0.82, 1000) is None
    assert in_sample_warning(_model(0.8), 0.9, 30) is None  # within chance on 30 documents
    assert "usually is" in str(in_sample_warning(SimpleNamespace(), 0.995, 500))
    assert in_sample_warning(SimpleNamespace(), 0.9, 500) is None
    assert in_sample_warning(_model(), None, 500) is None
