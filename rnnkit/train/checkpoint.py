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
import pickle
import tempfile
import warnings
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
    """Read a checkpoint safely (tensors and plain values only) onto the CPU.

    Raises FileNotFoundError for a missing file, and ValueError naming the file for one
    that holds anything else than tensors and plain values (such as a pickled object
    that would run code: it is refused, and nothing in it runs), is empty, truncated or
    corrupt, or is not an rnnkit checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder; pass a checkpoint file, "
                                f"such as {path / 'last.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: refused below anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # weights_only met an object that loading would import
            raise ValueError(f"{path} refused: it holds more than tensors and plain values "
                             f"({_reason(e)}); it was not loaded and nothing in it ran") from None
        raise ValueError(f"{path} is not a readable rnnkit checkpoint: it is corrupt or not "
                         f"a checkpoint ({_reason(e)})") from None
    except Exception as e:  # an empty, truncated or foreign file
        what = "is empty" if path.stat().st_size == 0 else \
            f"is truncated, corrupt or not a checkpoint ({type(e).__name__}: {_reason(e)})"
        raise ValueError(f"{path} is not a readable rnnkit checkpoint: it {what}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rnnkit checkpoint (expected format {FORMAT!r})")
    return payload


def _reason(error: Exception) -> str:
    """The line of a loading error that says what was wrong (torch wraps it in advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return lines[0] if lines else "no details"


#: what a checkpoint must hold to rebuild its model, with the type of each entry
MODEL_ENTRIES = {"model_class": str, "model_config": dict, "model_state": dict, "task": dict}
#: what it must hold besides to resume training
RESUME_ENTRIES = {"optimizer_state": dict, "scheduler_state": dict, "step": int,
                  "history": list, "bad_evals": int, "rng": dict}


def check_entries(payload: dict, entries: dict, purpose: str):
    """A ValueError naming each entry of ``entries`` that ``payload`` lacks or holds with
    the wrong type (a checkpoint from elsewhere, or one edited by hand)."""
    wrong = [f"{key} (missing)" if key not in payload else
             f"{key} ({type(payload[key]).__name__}, not {kind.__name__})"
             for key, kind in entries.items()
             if key not in payload or not isinstance(payload[key], kind)]
    if wrong:
        raise ValueError(f"the checkpoint cannot {purpose}: bad entries {', '.join(wrong)}")


def model_from_checkpoint(payload: dict):
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    check_entries(payload, MODEL_ENTRIES, "rebuild its model")
    name = payload["model_class"]
    if name not in MODEL_CLASSES:
        raise ValueError(f"checkpoint holds a {name!r}, not one of {sorted(MODEL_CLASSES)}")
    try:
        model = MODEL_CLASSES[name].from_config(payload["model_config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"the checkpoint's model_config is not a valid {name} config: "
                         f"{e}") from None
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, TypeError, AttributeError) as e:
        details = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ValueError(f"the checkpoint's weights do not fit its {name} config: "
                         f"{details}") from None
    return model.eval()
