"""Checkpoints: self-describing, written atomically, loaded without running pickled code.

A checkpoint holds the model's class and config, its weights, the optimiser and
scheduler states, the RNG states, the step, the metrics so far and whatever the task
needs to use the model again (its vocabulary or scaler), so loading one rebuilds the
model without the original command line. Everything in it is a tensor or a plain
Python value, so it loads with ``torch.load(weights_only=True)``: a checkpoint from
elsewhere cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from rnnkit import models

FORMAT = "rnnkit-checkpoint/1"
MODEL_CLASSES = {cls.__name__: cls for cls in (
    models.SequenceClassifier, models.SequenceTagger, models.LanguageModel,
    models.Forecaster, models.Seq2Seq)}


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over the target, so a crash mid-write leaves the
    previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (tensors and plain values only) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a foreign pickle, code objects...
        raise ValueError(f"{path} is not a readable rnnkit checkpoint: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rnnkit checkpoint (expected format {FORMAT!r})")
    return payload


def model_from_checkpoint(payload: dict):
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    name = payload["model_class"]
    if name not in MODEL_CLASSES:
        raise ValueError(f"checkpoint holds a {name!r}, not one of {sorted(MODEL_CLASSES)}")
    model = MODEL_CLASSES[name].from_config(payload["model_config"])
    model.load_state_dict(payload["model_state"])
    return model.eval()
