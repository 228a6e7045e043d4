"""Datasets and batching: synthetic long-dependency tasks, text, digits, time series,
sentence pairs and tagging, all available offline (generated, or bundled with Python,
scikit-learn or statsmodels)."""

from rnnkit.data.digits import DigitSequences, digit_sequences
from rnnkit.data.pairs import DATE_FORMS, date_pairs, read_pairs
from rnnkit.data.streams import batchify, tbptt_chunks
from rnnkit.data.synthetic import adding_problem, copy_memory, reversal, sentiment_sentences
from rnnkit.data.tagging import AGREEMENT_TAGS, ROLE_TAGS, TAGS, read_conll, synthetic_tagging
from rnnkit.data.text import (Vocabulary, default_corpus, length_buckets, lm_batches,
                              pad_batch, read_text, tokenize)
from rnnkit.data.timeseries import (BUNDLED, Scaler, Splits, load_bundled, read_csv_series,
                                    time_split, trends, windows)

__all__ = [
    "batchify", "tbptt_chunks",
    # synthetic
    "adding_problem", "copy_memory", "reversal", "sentiment_sentences",
    # text
    "Vocabulary", "tokenize", "read_text", "default_corpus", "lm_batches", "pad_batch",
    "length_buckets",
    # digits
    "DigitSequences", "digit_sequences",
    # time series
    "read_csv_series", "load_bundled", "BUNDLED", "time_split", "Splits", "Scaler",
    "windows", "trends",
    # pairs
    "read_pairs", "date_pairs", "DATE_FORMS",
    # tagging
    "read_conll", "synthetic_tagging", "TAGS", "ROLE_TAGS", "AGREEMENT_TAGS",
]
