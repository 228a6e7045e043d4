"""What the rnnkit command does, as plain functions: train a task, and use a checkpoint
(sample, evaluate, predict, translate, describe). The CLI only parses and prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from rnnkit._checks import check_int
from rnnkit import data as D
from rnnkit.train.checkpoint import check_code, load_checkpoint, model_from_checkpoint
from rnnkit.train.tasks import LIMITS, SPLITS, TASKS, TaskOptions, check_split, recipe
from rnnkit.train.trainer import TrainConfig, Trainer

#: prompts for the samples printed after training a language model on the built-in corpus
DEFAULT_PROMPTS = ("The ", "A function ", "If the ")


_TASK_FIELDS = frozenset(f.name for f in dataclasses.fields(TaskOptions))
_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
#: the names ``settings`` takes: the fields of TaskOptions and TrainConfig
SETTINGS = _TASK_FIELDS | _TRAIN_FIELDS


def _build(merged: dict) -> tuple[TaskOptions, TrainConfig]:
    """TaskOptions and TrainConfig from settings by name (each takes its own fields)."""
    return (TaskOptions(**{k: v for k, v in merged.items() if k in _TASK_FIELDS}),
            TrainConfig(**{k: v for k, v in merged.items() if k in _TRAIN_FIELDS}))


def settings(task: str, given: dict | None = None) -> tuple[TaskOptions, TrainConfig]:
    """The task's options and training config: the settings ``given`` (TaskOptions and
    TrainConfig fields by name), over the task's recipe, over the generic defaults (the
    layer options key by key)."""
    given = given or {}
    base = recipe(task, given)
    merged = {**base, **given}
    if "layer_options" in base or "layer_options" in given:
        merged["layer_options"] = {**base.get("layer_options", {}),
                                   **given.get("layer_options", {})}
    unknown = set(merged) - SETTINGS
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}: the settings are the fields "
                         f"of TaskOptions and TrainConfig")
    return _build(merged)


#: the settings a resumed run may change: how long it goes on, how often it evaluates,
#: where and how it runs (device, torch.compile) and how it shows progress; every other
#: one is the run's own
RESUME_MAY_CHANGE = frozenset({"max_steps", "max_time", "eval_every", "log_every", "patience",
                               "progress", "device", "compile"})


def resume_settings(task: str, out_dir: str | Path,
                    given: dict | None = None, *,
                    trust_code: bool = False) -> tuple[TaskOptions, TrainConfig]:
    """The options and training config of the run in ``out_dir`` (from its last.pt), with
    the settings ``given`` that a resume may change (RESUME_MAY_CHANGE); a given setting
    that contradicts the run's own is refused, naming it, instead of silently changing
    the run's weights. A run of a user's cell resumes only with ``trust_code`` (it
    imports the module its checkpoint names)."""
    path = Path(out_dir) / "last.pt"
    payload = load_checkpoint(path)
    check_code(payload.get("task", {}).get("options", {}).get("cell"), trust_code)
    saved_task = payload.get("task", {}).get("name")
    if saved_task != task:
        raise ValueError(f"cannot resume: {path} is a {saved_task!r} run, not {task!r}")
    saved = {**{k: v for k, v in (payload.get("train_config") or {}).items()
                if k in _TRAIN_FIELDS},
             **{k: v for k, v in payload["task"].get("options", {}).items()
                if k in _TASK_FIELDS}}
    given = dict(given or {})
    if "layer_options" in given and not given["layer_options"]:
        del given["layer_options"]  # no layer flag given
    unknown = set(given) - SETTINGS
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}")
    for key, value in given.items():
        if key in RESUME_MAY_CHANGE:
            continue
        current = saved.get(key)
        if key == "layer_options":  # a flag for each option: only those given are compared
            clash = {k: v for k, v in value.items() if (current or {}).get(k) != v}
            value, current = clash, {k: (current or {}).get(k) for k in clash}
            if not clash:
                continue
        if value != current and not (isinstance(current, list) and list(value) == current):
            raise ValueError(f"cannot resume with {key}={value!r}: the run in {out_dir} has "
                             f"{key}={current!r}; a resume keeps the run's own settings (it "
                             f"may change {', '.join(sorted(RESUME_MAY_CHANGE))})")
    return _build({**saved, **{k: v for k, v in given.items() if k in RESUME_MAY_CHANGE}})


def train(task: str, options: TaskOptions | None = None, config: TrainConfig | None = None,
          out_dir: str | Path = "runs/run", *, resume: bool = False, overwrite: bool = False,
          samples: int = 3) -> dict:
    """Train ``task`` (a name in TASKS) into ``out_dir``; returns the Trainer's summary
    (also written to ``out_dir/summary.json``: the best checkpoint's validation and test
    metrics beside the baselines'), plus generated ``samples`` for a language model.
    ``options`` and ``config`` default to the task's recipe (see :func:`settings`). A
    folder that holds a run is only continued (``resume``) or replaced (``overwrite``),
    never mixed with a new one."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    default_options, default_config = settings(task)
    options, config = options or default_options, config or default_config
    trainer = Trainer(TASKS[task](options), config, out_dir, resume=resume, overwrite=overwrite)
    summary = trainer.fit()
    summary["checkpoints"] = [str(p) for p in sorted(Path(out_dir).glob("*.pt"))]
    if task == "lm" and samples:
        best = Path(out_dir) / "best.pt"
        path = best if best.is_file() else Path(out_dir) / "last.pt"
        vocab = trainer.task.vocab  # the user's text may lack the prompts' characters:
        prompts = [p for p in DEFAULT_PROMPTS  # then its most frequent token starts them
                   if all(t in vocab for t in D.tokenize(p, vocab.level))] or [vocab.tokens[4]]
        # only this run's own cell is trusted (a resumed folder's best.pt could name
        # another module)
        summary["samples"] = [generate_text(path, prompt, length=240, temperature=0.8, seed=i,
                                            trust_code=options.cell)
                              for i, prompt in enumerate(prompts[:samples])]
    return summary


#: the size in a model's config that each vocabulary or name list of a checkpoint's task
#: entry must match
_ENTRY_SIZES = {"vocab": "vocab_size", "src_vocab": "src_vocab_size",
                "tgt_vocab": "tgt_vocab_size", "labels": "num_classes", "tags": "num_tags"}


def load(path: str | Path, *, trust_code: bool | str = False):
    """(model, checkpoint payload) from a checkpoint file, checked for consistency: its
    task is known and its vocabularies and labels fit the model. A model of a user's
    cell is rebuilt only with ``trust_code`` (it imports the cell's module): True, or
    the one cell name to trust."""
    payload = load_checkpoint(path)
    try:
        model = model_from_checkpoint(payload, trust_code=trust_code)
        entry = payload["task"]
        if entry.get("name") not in TASKS or not isinstance(entry.get("options"), dict):
            raise ValueError(f"its task entry names no known task ({sorted(TASKS)})")
        missing = [key for key in TASKS[entry["name"]].entries if key not in entry]
        if missing:
            raise ValueError(f"its task entry lacks {', '.join(missing)}, which a "
                             f"{entry['name']!r} checkpoint holds")
        window = entry.get("window", 1)
        if isinstance(window, bool) or not isinstance(window, int) or \
                not 1 <= window <= LIMITS["seq_len"]:
            raise ValueError(f"its task entry's window must be an int in [1, "
                             f"{LIMITS['seq_len']:,}], got {window!r}")
        for key, size in _ENTRY_SIZES.items():
            if key not in entry:
                continue
            if key.endswith("vocab"):
                n = len(D.Vocabulary.from_dict(entry[key]))
            else:  # a classifier has at least two outputs
                n = len(entry[key]) if key == "tags" else max(2, len(entry[key]))
            if n != getattr(model.config, size):
                raise ValueError(f"its {key} has {n} entries but the model's {size} is "
                                 f"{getattr(model.config, size)}: they do not belong together")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return model, payload


def _task(payload: dict, data: str | None = None):
    """The checkpoint's task rebuilt with its options and vocabularies (data replaced)."""
    entry = payload["task"]
    options = TaskOptions(**entry["options"])
    if data is not None:
        options = dataclasses.replace(options, data=data)
    return TASKS[entry["name"]](options, saved=entry)


def _known(vocab, text: str, what: str) -> list[int]:
    """``text`` encoded; a ValueError naming the tokens the vocabulary does not know."""
    tokens = D.tokenize(text, vocab.level)
    unknown = sorted({t for t in tokens if t not in vocab})
    if unknown:
        raise ValueError(f"{what} holds {len(unknown)} token(s) the checkpoint's vocabulary "
                         f"does not know: {unknown[:10]}")
    return vocab.encode(text)


def _require(payload: dict, *tasks: str):
    name = payload["task"]["name"]
    if name not in tasks:
        raise ValueError(f"this checkpoint is a {name!r} model; this needs a "
                         f"{' or '.join(repr(t) for t in tasks)} checkpoint")


def generate_text(path: str | Path, prompt: str, *, length: int = 200,
                  temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None,
                  trust_code: bool | str = False) -> str:
    """Continue ``prompt`` with a language-model checkpoint; returns prompt + new text."""
    check_int("length", length, minimum=0, maximum=MAX_GENERATED_TOKENS)
    model, payload = load(path, trust_code=trust_code)
    _require(payload, "lm")
    vocab = D.Vocabulary.from_dict(payload["task"]["vocab"])
    ids = _known(vocab, prompt, "prompt")
    if not ids:
        raise ValueError("prompt must hold at least one token")
    new = model.generate(ids, length, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed)
    joiner = "" if vocab.level == "char" else " "
    return prompt + joiner + vocab.decode(new, skip_special=True)


def evaluate(path: str | Path, data: str | None = None, *, split: str = "validation",
             trust_code: bool = False) -> dict:
    """The task's metrics for a checkpoint on the ``split`` ("validation" or "test") of
    its data or of ``data``; with ``data``, also the share of its tokens unknown to the
    checkpoint's vocabulary (data mostly unknown to it is refused)."""
    check_split(split)  # before the checkpoint is read
    model, payload = load(path, trust_code=trust_code)
    task = _task(payload, data)
    with torch.no_grad():
        metrics = task.evaluate(model, split=split)
    if data is not None and any(key.endswith("vocab") for key in payload["task"]):
        metrics["unknown_tokens"] = task.unknown_tokens
    return metrics


def describe(path: str | Path, *, trust_code: bool = False) -> dict:
    """What a checkpoint holds: model, size, task, training progress and metrics."""
    model, payload = load(path, trust_code=trust_code)
    return {"model": payload["model_class"], "config": payload["model_config"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "task": payload["task"]["name"], "task_options": payload["task"]["options"],
            "step": payload.get("step"), "best": payload.get("best"),
            "last_metrics": (payload.get("history") or [None])[-1],
            "train_config": payload.get("train_config")}


def predict(path: str | Path, texts: list[str] | None = None, *, data: str | None = None,
            trust_code: bool = False):
    """Classify or tag ``texts``; or forecast the horizon after a series' end: what the
    checkpoint's task predicts (:meth:`rnnkit.train.tasks.Task.predict`)."""
    model, payload = load(path, trust_code=trust_code)
    return TASKS[payload["task"]["name"]].predict(model, payload["task"], texts, data)


#: the longest source ``translate`` takes, in tokens: decoding allocates with its length
MAX_SOURCE_TOKENS = 2_000
#: the widest beam ``translate`` searches: each beam decodes the whole source again
MAX_BEAM_SIZE = 64
#: the most tokens ``generate_text`` makes in one call
MAX_GENERATED_TOKENS = 100_000


def translate(path: str | Path, text: str, *, beam_size: int = 1,
              trust_code: bool = False) -> str:
    """Map ``text`` with a translate checkpoint (greedy, or beam search with beam_size > 1)."""
    check_int("beam_size", beam_size, maximum=MAX_BEAM_SIZE, note=" (1: greedy)")
    model, payload = load(path, trust_code=trust_code)
    _require(payload, "translate")
    src_vocab = D.Vocabulary.from_dict(payload["task"]["src_vocab"])
    tgt_vocab = D.Vocabulary.from_dict(payload["task"]["tgt_vocab"])
    ids = src_vocab.encode(text)
    if not ids:
        raise ValueError("the text to translate is empty")
    if all(i == src_vocab.unk_id for i in ids):
        raise ValueError(f"none of the {len(ids)} tokens of the text to translate is known to "
                         "the checkpoint's source vocabulary")
    if len(ids) > MAX_SOURCE_TOKENS:
        raise ValueError(f"the text to translate has {len(ids):,} tokens, more than the "
                         f"{MAX_SOURCE_TOKENS:,} translate takes at once: split it")
    src = torch.tensor([ids])
    max_length = 4 * src.shape[1] + 10
    if beam_size > 1:
        tokens = model.beam_search(src, beam_size=beam_size, max_length=max_length)[0]
    else:
        tokens = model.greedy(src, max_length=max_length)[0][0]
    return tgt_vocab.decode(tokens, skip_special=True)


def example_inputs(model, payload: dict) -> tuple:
    """A small batch of the inputs a checkpoint's model takes, for export and checks."""
    from rnnkit import models

    g = torch.Generator().manual_seed(0)
    c = model.config
    if isinstance(model, models.Seq2Seq):
        return (torch.randint(4, c.src_vocab_size, (2, 12), generator=g),
                torch.randint(4, c.tgt_vocab_size, (2, 8), generator=g))
    if isinstance(model, models.LanguageModel):
        return (torch.randint(4, c.vocab_size, (2, 16), generator=g),)
    if isinstance(model, models.Forecaster):
        window = payload["task"].get("window", 24)
        return (torch.randn(2, window, c.input_size, generator=g) * model.std + model.mean,)
    if c.vocab_size is not None:  # classifier or tagger on tokens
        return (torch.randint(4, c.vocab_size, (2, 10), generator=g),)
    return (torch.randn(2, 10, c.input_size, generator=g),)


def export(path: str | Path, out: str | Path | None = None, *,
           overwrite: bool = False, trust_code: bool = False) -> tuple[Path, float]:
    """Export a checkpoint's model to ONNX next to it (or at ``out``) and check the file
    against onnxruntime; returns the file and the max abs difference. The file appears
    whole and checked or not at all (written to a temporary file, then renamed); an
    existing file is replaced only with ``overwrite``, and never the checkpoint itself."""
    from rnnkit._files import atomic_path
    from rnnkit.export import check_onnx, export_onnx

    out = Path(out) if out is not None else Path(path).with_suffix(".onnx")
    if out.exists() and out.resolve() == Path(path).resolve():
        raise ValueError(f"--out {out} is the checkpoint being exported: choose another file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite to replace it, or "
                              "choose another --out")
    if out.exists() and not out.is_file():
        raise IsADirectoryError(f"--out {out} is not a file")
    model, payload = load(path, trust_code=trust_code)
    inputs = example_inputs(model, payload)
    with atomic_path(out) as tmp:
        export_onnx(model, tmp, inputs)
        difference = check_onnx(tmp, model, inputs)
    return out, difference


def format_summary(summary: dict) -> str:
    """A training summary as a small table: the model's and each baseline's metrics (one
    column each, with its unit) on the validation and the test split (a row each), then
    the steps, time and throughput."""
    names = summary.get("metric_names", {})
    keys = list(summary.get("validation") or {})
    splits = [s for s in SPLITS if summary.get(s)]
    rows = [["", "split", *[names.get(k, k) for k in keys]]]
    entries = [(f"rnnkit (best, step {summary.get('best_step')})", summary),
               *summary.get("baselines", {}).items()]
    for name, metrics in entries:
        for i, split in enumerate(splits):
            values = metrics.get(split, {})
            rows.append([name if i == 0 else "", split,
                         *[f"{values[k]:.4g}" if k in values else "-" for k in keys]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    better = "higher" if summary.get("higher_is_better") else "lower"
    lines.append(f"metric: {summary['metric']} ({better} is better); {summary['stop_reason']} "
                 f"after {summary['steps']} steps, {summary['seconds']:.0f} s "
                 f"({summary['train_seconds']:.0f} s training, "
                 f"{summary['tokens_per_second']:,.0f} tokens/s)")
    return "\n".join(lines)
