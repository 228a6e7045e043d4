"""Checkpoints: self-describing, written atomically, loaded without running pickled code.

A checkpoint holds the model's class and config, its weights, the optimiser and
scheduler states, the RNG states, the step, the metrics so far and whatever the task
needs to use the model again (its vocabulary or scaler), so loading one rebuilds the
model without the original command line. Everything in it is a tensor or a plain
Python value, so it loads with ``torch.load(weights_only=True)``: a checkpoint from
elsewhere cannot run code.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from rnnkit import models
from rnnkit._files import atomic_path
from rnnkit.models.base import CELL_NAMES

FORMAT = "rnnkit-checkpoint/1"
#: the most plain values (dict entries, list items, strings, numbers) a checkpoint may
#: hold, counting a value each time it is referred to (a crafted file of a few kB can
#: refer to one list a billion times), and the deepest nesting of its lists and dicts
MAX_PLAIN_VALUES, MAX_DEPTH = 5_000_000, 32
#: torch stores a checkpoint's records uncompressed: an archive that would expand beyond
#: this many times its size (plus a margin) is refused before anything is read
MAX_EXPANSION, EXPANSION_MARGIN = 4, 64 * 2 ** 20
MODEL_CLASSES = {cls.__name__: cls for cls in (
    models.SequenceClassifier, models.SequenceTagger, models.LanguageModel,
    models.Forecaster, models.Seq2Seq)}


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over the target, so a crash mid-write leaves the
    previous checkpoint intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
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
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():  # a FIFO would block the read, a device never end it
        raise ValueError(f"checkpoint {path} is not a regular file")
    _check_archive(path)
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
    problem = _plain_problem(payload)
    if problem:
        raise ValueError(f"{path} refused: {problem}")
    return payload


def _check_archive(path: Path):
    """Refuse an archive whose records would expand far beyond the file's size (a zip
    bomb), before torch reads any of them."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format, or not a checkpoint: torch.load says which
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a readable rnnkit checkpoint: its archive is "
                         f"corrupt ({e})") from None
    if expanded > MAX_EXPANSION * size + EXPANSION_MARGIN:
        raise ValueError(f"{path} refused: its {size:,}-byte archive would expand to "
                         f"{expanded:,} bytes (a checkpoint's records are stored "
                         "uncompressed); it was not loaded")


def _plain_problem(payload) -> str | None:
    """What makes ``payload``'s plain values too large or too deep to use, or None: walked
    without recursion, counting each reference, and stopped at the first excess."""
    count, stack = 0, [(payload, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_PLAIN_VALUES:
            return (f"it holds more than {MAX_PLAIN_VALUES:,} values (counting each "
                    "reference to a shared one)")
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return f"its values are nested more than {MAX_DEPTH} levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if not isinstance(item, (str, int, float, bool, type(None), torch.Tensor)):
                    stack.append((item, depth + 1))
                else:
                    count += 1
    return None


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


def model_from_checkpoint(payload: dict, *, trust_code: bool | str = False):
    """Rebuild the model a checkpoint describes and load its weights (eval mode). A model
    of a user's cell, which the checkpoint names by its module, is rebuilt only with
    ``trust_code``: importing the module runs its code."""
    check_entries(payload, MODEL_ENTRIES, "rebuild its model")
    name = payload["model_class"]
    if name not in MODEL_CLASSES:
        raise ValueError(f"checkpoint holds a {name!r}, not one of {sorted(MODEL_CLASSES)}")
    config, state = payload["model_config"], payload["model_state"]
    rnn = config.get("rnn")
    check_code(rnn.get("cell") if isinstance(rnn, dict) else None, trust_code)
    layers = rnn.get("num_layers") if isinstance(rnn, dict) else None
    if isinstance(layers, int) and layers > len(state):  # before a module per layer is made
        raise ValueError(f"the checkpoint's model_config has num_layers={layers:,} but its "
                         f"model_state holds only {len(state)} tensors")
    # the model is first built on the meta device, which allocates nothing, and its
    # shapes compared with the stored tensors': a config's sizes cannot make loading
    # allocate more than the weights the file holds
    try:
        with torch.device("meta"):
            skeleton = MODEL_CLASSES[name].from_config(config)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's model_config is not a valid {name} config: "
                         f"{_reason(e)}") from None
    misfit = _misfit(skeleton.state_dict(), state)
    if misfit:
        raise ValueError(f"the checkpoint's weights do not fit its {name} config: {misfit}")
    model = MODEL_CLASSES[name].from_config(config)
    model.load_state_dict(state)
    return model.eval()


def check_code(cell, trust_code: bool | str):
    """A PermissionError where a saved ``cell`` names a user's cell (``module:Class``)
    and the user has not said to trust the file's code: loading imports the module.
    ``trust_code``: True, or the one cell name that is trusted (a run's own)."""
    if isinstance(cell, str) and cell not in CELL_NAMES and trust_code is not True \
            and trust_code != cell:
        raise PermissionError(
            f"the checkpoint's cell is {cell!r}, a user's cell: rebuilding it imports module "
            f"{cell.split(':')[0]!r}, which runs that module's code; pass --trust-code "
            f"(trust_code=True) if you trust the checkpoint and the module")


def _misfit(expected: dict, stored: dict) -> str | None:
    """How the ``stored`` weights differ from the ``expected`` ones (names and shapes), or
    None where they fit."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    wrong = [f"{k} is {_shape(stored[k])}, the config needs {tuple(v.shape)}"
             for k, v in expected.items() if k in stored and (
                 not isinstance(stored[k], torch.Tensor) or stored[k].shape != v.shape)]
    parts = [f"missing {', '.join(missing[:5])}" * bool(missing),
             f"unexpected {', '.join(unexpected[:5])}" * bool(unexpected), *wrong[:5]]
    return "; ".join(p for p in parts if p) or None


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else \
        f"a {type(value).__name__}, not a tensor"
