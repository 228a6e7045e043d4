"""Ready models for the sequence-task shapes, built from rnnkit's layers."""

from rnnkit.models.base import RecurrentConfig
from rnnkit.models.classifier import ClassifierConfig, SequenceClassifier
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.models.lm import LanguageModel, LanguageModelConfig, sample
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.models.tagger import SequenceTagger, TaggerConfig

__all__ = ["RecurrentConfig", "SequenceClassifier", "ClassifierConfig", "SequenceTagger",
           "TaggerConfig", "LanguageModel", "LanguageModelConfig", "Forecaster",
           "ForecasterConfig", "Seq2Seq", "Seq2SeqConfig", "sample"]
