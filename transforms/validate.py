"""Validate and preprocess: DocBatches in, valid preprocessed DocBatches out.

Rules, in order (a record gets the first that fails): id missing, id not a string,
id empty, id with a NUL character, text missing, text not a string, text empty, text
longer than ``max_text_chars``. Valid texts are then preprocessed with the model's recorded
settings; a text that preprocessing empties (e.g. only HTML tags) is dead-lettered at
stage ``preprocess``. Rejected records leave on the ``dead_letters`` output with
their reason, position and raw payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd

from models.preprocess import PreprocessConfig, preprocess_series
from transforms.records import DEAD_LETTERS, DOC_ID, TEXT, DocBatch, dead_letters_from_frame


def validation_reasons(frame: pd.DataFrame, max_text_chars: int) -> np.ndarray:
    """One reason string per row; '' where the row is valid. Missing is ``None``: every
    reader gives it for an absent key, a null or an empty cell (the batch's columns are
    objects, so pandas never turns it into NaN); a NaN is a value, a number (JSON's
    ``NaN``, a float column's), hence "not a string"."""
    ids, texts = frame[DOC_ID].tolist(), frame[TEXT].tolist()
    id_none = np.fromiter((v is None for v in ids), bool, len(ids))
    id_str = np.fromiter((type(v) is str for v in ids), bool, len(ids))
    id_empty = np.fromiter((type(v) is str and not v.strip() for v in ids), bool, len(ids))
    id_nul = np.fromiter((type(v) is str and "\x00" in v for v in ids), bool, len(ids))
    tx_none = np.fromiter((v is None for v in texts), bool, len(texts))
    tx_str = np.fromiter((type(v) is str for v in texts), bool, len(texts))
    tx_len = np.fromiter((len(v) if type(v) is str else 0 for v in texts), np.int64, len(texts))
    tx_blank = np.fromiter((type(v) is str and not v.strip() for v in texts), bool, len(texts))
    conditions = [
        id_none, ~id_str, id_empty, id_nul, tx_none, ~tx_str, tx_blank,
        tx_len > max_text_chars,
    ]
    choices = [
        "missing id", "id is not a string", "empty id", "id contains a NUL character",
        "missing text",
        "text is not a string", "empty text",
        f"text longer than max_text_chars={max_text_chars}",
    ]
    return np.select(conditions, choices, default="")


class _ValidateFn(beam.DoFn):
    def __init__(self, preprocessing: PreprocessConfig, max_text_chars: int, payload_limit: int):
        self._pre = preprocessing
        self._max_text_chars = max_text_chars
        self._payload_limit = payload_limit

    def process(self, batch: DocBatch) -> Iterator[Any]:
        frame = batch.frame
        reasons = validation_reasons(frame, self._max_text_chars)
        bad = reasons != ""
        if bad.any():
            for dl in dead_letters_from_frame(
                batch, frame[bad], "validate", reasons[bad], self._payload_limit
            ):
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dl)
            frame = frame[~bad]
        if frame.empty:
            return
        frame = frame.assign(**{TEXT: preprocess_series(frame[TEXT], self._pre)})
        emptied = (frame[TEXT].str.len() == 0).to_numpy()
        if emptied.any():
            for dl in dead_letters_from_frame(
                batch, frame[emptied], "preprocess",
                ["text is empty after preprocessing"] * int(emptied.sum()), self._payload_limit,
            ):
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dl)
            frame = frame[~emptied]
        if not frame.empty:
            yield batch.with_frame(frame.reset_index(drop=True))


class ValidateAndPreprocess(beam.PTransform):
    """DocBatches -> valid, preprocessed DocBatches (main) + ``dead_letters``."""

    def __init__(self, preprocessing: PreprocessConfig, max_text_chars: int, payload_limit: int):
        super().__init__()
        self._fn = _ValidateFn(preprocessing, max_text_chars, payload_limit)

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Check and clean texts" >> beam.ParDo(self._fn).with_output_types(
            DocBatch).with_outputs(DEAD_LETTERS, main="valid")
