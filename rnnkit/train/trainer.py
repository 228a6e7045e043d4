"""The Trainer: one loop for every task model.

A task (see :mod:`rnnkit.train.tasks`) supplies the model, a deterministic batch for
each step, the loss and the evaluation; the Trainer owns the optimiser, the schedule,
clipping, mixed precision, evaluation, early stopping, checkpoints, resuming, logging
and plots. Because batch k depends only on the seed and k, and the checkpoint holds
the RNG states, an interrupted run resumed from its last checkpoint ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rnnkit._checks import check_int
from rnnkit._files import FolderLock, atomic_path, writable_folder, write_text
from rnnkit.train.checkpoint import (MODEL_ENTRIES, RESUME_ENTRIES, check_entries,
                                     load_checkpoint, save_checkpoint)
from rnnkit.train.tasks import MAX_SEED
from rnnkit.train.tbptt import detach_state

SCHEDULES = ("cosine", "plateau", "constant")
#: consecutive steps with a non-finite loss or gradient before a run gives up
MAX_BAD_STEPS = 5
#: the files a run writes into its folder: a folder holding any of them holds a run
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "curves.png", "summary.json")


class NumericalError(FloatingPointError):
    """Training produced NaN or infinite values step after step."""


@dataclass
class TrainConfig:
    """How to train. Every field has a default; the CLI's options are these fields."""

    #: optimiser steps in all
    max_steps: int = 1000
    #: stop after this many seconds of training (None: no limit); the run can resume
    max_time: float | None = None
    #: AdamW's peak learning rate
    lr: float = 3e-3
    #: AdamW's decoupled weight decay, on weight matrices and embeddings (not on biases
    #: and layer-norm gains)
    weight_decay: float = 0.01
    #: "cosine" (warm-up, then cosine decay to 10%), "plateau" (halve when the
    #: validation metric stalls) or "constant" (after warm-up)
    schedule: str = "cosine"
    #: steps of linear warm-up
    warmup_steps: int = 50
    #: clip the gradient norm to this (None: off); on by default because a recurrence
    #: can produce rare, huge gradients (the exploding-gradient problem)
    clip_grad_norm: float | None = 1.0
    #: evaluate (and checkpoint) every this many steps
    eval_every: int = 200
    #: stop after this many evaluations without improvement (None: never)
    patience: int | None = None
    #: run forward passes under bfloat16 autocast
    bf16: bool = False
    #: run the training step's model through torch.compile (the first steps then take
    #: the compilation; evaluation and checkpoints use the model itself)
    compile: bool = False
    #: seed of the weights, the batches and dropout
    seed: int = 0
    #: write a CSV line (and refresh the progress bar's numbers) every this many steps
    log_every: int = 20
    #: show a live progress bar (else print a line per evaluation)
    progress: bool = True
    #: "cpu" or "cuda"
    device: str = "cpu"

    def __post_init__(self):
        for name in ("max_steps", "eval_every", "log_every"):
            check_int(name, getattr(self, name))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("lr", "weight_decay", "clip_grad_norm", "max_time"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float))):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be > 0 and finite, got {self.lr!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.clip_grad_norm is not None and not 0 < self.clip_grad_norm < math.inf:
            raise ValueError(f"clip_grad_norm must be > 0 and finite, or None (off), got "
                             f"{self.clip_grad_norm}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(
                self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be an int >= 1 or None, got {self.patience!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) \
                or not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed must be an int in [0, {MAX_SEED}), got {self.seed!r}")
        for name in ("bf16", "progress", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool (true or false), got "
                                f"{getattr(self, name)!r}")
        if self.max_time is not None and not 0 < self.max_time < math.inf:
            raise ValueError(f"max_time must be > 0 and finite, or None, got {self.max_time}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch sees no CUDA device here; use 'cpu'")


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: weight decay on the weight matrices and embeddings only.
    Biases and layer-norm gains stay undecayed: decay would pull a chrono or forget-gate
    bias back to 0, closing the gates that keep the state over long spans."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    keep = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]


def _seed_everything(seed: int):
    random.seed(seed)
    torch.manual_seed(seed)


def _distributed(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun (WORLD_SIZE > 1) join the process group,
    gloo on CPU and nccl on GPU; else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _agree(flag: bool, world: int) -> bool:
    """Rank 0's decision, for every rank (so that none waits for a step that never comes)."""
    if world == 1:
        return flag
    import torch.distributed as dist
    t = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def prepare_out_dir(out_dir: Path, *, resume: bool = False,
                    overwrite: bool = False) -> FolderLock:
    """Make ``out_dir`` ready for a run, or say why it cannot be, before any training;
    returns the folder's lock, held: one run writes into a folder at a time (a second,
    a resume among them, is refused while the first lives).

    The folder must be creatable and writable. A folder that holds a run (any of
    RUN_FILES) is only continued with ``resume`` or replaced with ``overwrite``; never
    silently mixed with a new run. The replaced run's files go only once the new run has
    built its model (:func:`clear_old_run`), so a typo never costs the old run.
    Temporary files of a writer that was killed mid-write are removed.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the "
                         "run in the output folder, overwrite replaces it")
    writable_folder(out_dir)
    lock = FolderLock(out_dir).acquire()
    try:
        _check(out_dir, resume, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


#: the list of what a run wrote into its folder besides RUN_FILES (its TensorBoard logs),
#: so that --overwrite deletes those and nothing a user put there
MANIFEST = ".rnnkit-files.json"


def _record(out_dir: Path, name: str):
    """Note in the folder's manifest that the run wrote ``name``."""
    path = out_dir / MANIFEST
    try:
        names = set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        names = set()
    write_text(path, json.dumps(sorted(names | {name})))


def clear_old_run(out_dir: Path):
    """Delete the run files of the run being replaced, and what its manifest lists."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    try:
        listed = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listed = []
    for name in listed if isinstance(listed, list) else []:
        if name == "tensorboard":  # the only folder a run writes
            shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)


def _check(out_dir: Path, resume: bool, overwrite: bool):
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume:
        if not (out_dir / "last.pt").is_file():
            raise FileNotFoundError(f"resume: no checkpoint to resume from at "
                                    f"{out_dir / 'last.pt'}")
    elif found and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a run ({', '.join(found)}): pass "
                              "resume=True (--resume) to continue it, overwrite=True "
                              "(--overwrite) to replace it, or choose another --out")
    # temporary files of a writer killed mid-write (rnnkit._files.atomic_path names them
    # NAME.*.tmp; metrics.csv.tmp is an older writer's)
    patterns = [f"{name}.*.tmp" for name in (*RUN_FILES, MANIFEST)] + ["metrics.csv.tmp"]
    for pattern in patterns:
        for stale in out_dir.glob(pattern):
            stale.unlink(missing_ok=True)


class Trainer:
    """Train ``task``'s model into ``out_dir`` (``last.pt``, ``best.pt``, ``metrics.csv``,
    ``curves.png``). With ``resume=True`` it continues from ``out_dir/last.pt``; with
    ``overwrite=True`` it replaces a run already there (see :func:`prepare_out_dir`)."""

    def __init__(self, task, config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, on_step: Callable[[int], None] | None = None):
        self.task, self.config, self.out_dir = task, config, Path(out_dir)
        self.on_step = on_step  # called after every step (tests use it to interrupt)
        self.rank, self.world = _distributed(config.device)
        device = config.device
        if device == "cuda" and self.world > 1:  # one GPU per process
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
            torch.cuda.set_device(device)
        self.device = device
        self._lock = None
        if self.rank == 0:  # one writer: the ranks hold the same weights
            self._lock = prepare_out_dir(self.out_dir, resume=resume, overwrite=overwrite)
        _seed_everything(config.seed)  # the same initial weights on every rank
        try:
            self.model = task.build_model().to(device)
        except BaseException:
            self.release()  # the folder, and the run it holds, stay as they were
            raise
        if overwrite and self.rank == 0:  # the new run is sound: now the old one goes
            clear_old_run(self.out_dir)
        self.net = self.model  # what the training step calls: DDP-wrapped when distributed
        if self.world > 1:
            task.shard(self.rank, self.world)  # each rank its own part of the data
            from torch.nn.parallel import DistributedDataParallel
            # the models' only buffers are fixed statistics (the forecaster's scaler),
            # equal on every rank: no need to broadcast them at every step
            self.net = DistributedDataParallel(
                self.model, device_ids=[torch.cuda.current_device()] if device != "cpu" else None,
                find_unused_parameters=True, broadcast_buffers=False)
        if config.compile:  # the same weights: compiling wraps the module, copies nothing
            self.net = torch.compile(self.net)
        self.optimizer = torch.optim.AdamW(_decay_groups(self.model, config.weight_decay),
                                           lr=config.lr)
        self.scheduler = self._make_scheduler()
        self.step, self.history, self.best, self.bad_evals = 0, [], None, 0
        self.bad_steps = 0  # consecutive steps skipped for non-finite values
        self.skipped_steps = 0  # all steps skipped for non-finite values
        self.train_state = None  # what a task carries between steps (TBPTT's state)
        if resume:
            self._restore(load_checkpoint(self.out_dir / "last.pt"))

    # -- schedule --------------------------------------------------------------------

    def _make_scheduler(self):
        c = self.config
        if c.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max" if self.task.higher_is_better else "min",
                factor=0.5, patience=1)

        def factor(step: int) -> float:
            if step < c.warmup_steps:
                return (step + 1) / c.warmup_steps
            if c.schedule == "constant":
                return 1.0
            progress = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # -- checkpoints ------------------------------------------------------------------

    def _payload(self) -> dict:
        return {
            "model_class": type(self.model).__name__,
            "model_config": self.model.to_config(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "task": {"name": self.task.name, "options": dataclasses.asdict(self.task.options),
                     **self.task.extra()},
            "train_config": dataclasses.asdict(self.config),
            "step": self.step, "history": self.history, "best": self.best,
            "bad_evals": self.bad_evals,
            "bad_steps": self.bad_steps, "skipped_steps": self.skipped_steps,
            "train_state": detach_state(self.train_state),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }

    def _restore(self, payload: dict):
        self._check_resumable(payload)
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        self.step, self.history = payload["step"], payload["history"]
        self.best, self.bad_evals = payload["best"], payload["bad_evals"]
        self.bad_steps = payload.get("bad_steps", 0)
        self.skipped_steps = payload.get("skipped_steps", 0)
        state = payload["train_state"]
        self.train_state = None if state is None else _to_device(state, self.device)
        torch.set_rng_state(payload["rng"]["torch"])
        random.setstate(payload["rng"]["python"])

    def _check_resumable(self, payload: dict):
        """A clear error where the checkpoint is not this run's: another task, another
        model configuration, or data whose vocabulary (labels, columns...) differs."""
        where = self.out_dir / "last.pt"
        check_entries(payload, {**MODEL_ENTRIES, **RESUME_ENTRIES}, "resume training")
        saved_task = payload["task"].get("name")
        if saved_task != self.task.name:
            raise ValueError(f"cannot resume: {where} is a {saved_task!r} run, not "
                             f"{self.task.name!r}")
        differences = _differences(payload["model_config"], self.model.to_config())
        if differences:
            raise ValueError(f"cannot resume: {where} holds another model ({differences}); "
                             "resume with the options the run was started with")
        differences = _differences({k: payload["task"].get(k) for k in self.task.extra()},
                                   self.task.extra())
        if differences:
            raise ValueError(f"cannot resume: the data does not match the run in {where} "
                             f"({differences}); resume with the data it was trained on")

    def save(self, name: str = "last.pt") -> Path | None:
        if self.rank != 0:  # one writer: the ranks hold the same weights
            return None
        return save_checkpoint(self._payload(), self.out_dir / name)

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train until max_steps, max_time, early stopping or an interrupt (Ctrl-C, SIGINT);
        then evaluate the last weights on validation, score the best checkpoint once on
        the test split beside the task's baselines, and write ``summary.json``. Returns
        that summary, with the history and the output paths. The folder is free for
        another run when it returns, however it returns."""
        try:
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> dict:
        task = self.task
        lead = self.rank == 0  # only rank 0 logs, evaluates and writes
        start_time, start_step = time.perf_counter(), self.step
        self.train_seconds = 0.0  # the steps only, without evaluations and checkpoints
        log = _CsvLog(self.out_dir / "metrics.csv", upto=self.step) if lead else _NoLog()
        tensorboard = _tensorboard(self.out_dir) if lead else None
        try:
            with _StopOnInterrupt() as interrupt:
                stop_reason = self._loop(log, tensorboard, lead, start_time, interrupt)
                if lead and (not self.history or self.history[-1]["step"] != self.step):
                    with _Progress(False, 0, 0, task.metric) as lines:  # the last word
                        self._evaluate(log, tensorboard, lines)
                self.save("last.pt")
        finally:  # the rows so far reach metrics.csv even when the run stops on an error
            log.close()
            if tensorboard is not None:
                tensorboard.close()
        train_rows = [r for r in log.rows if r.get("split") == "train"]
        curves = plot_curves(self.history, self.out_dir / "curves.png", task.metric, train_rows) \
            if lead else None
        held_out = self._held_out_report() if lead else {}
        seconds = time.perf_counter() - start_time  # all of it: training, evaluations, test
        summary = {"task": task.name, "metric": task.metric,
                   "higher_is_better": task.higher_is_better,
                   "metric_names": dict(getattr(task, "metric_names", {})), **held_out,
                   "steps": self.step, "trained_steps": self.step - start_step,
                   "seconds": seconds, "train_seconds": self.train_seconds,
                   "tokens_per_second": self.units_trained / max(self.train_seconds, 1e-9),
                   "stop_reason": stop_reason, "best": self.best,
                   "skipped_steps": self.skipped_steps}
        if lead:
            _write_json(summary, self.out_dir / "summary.json")
        return {**summary, "history": self.history, "out_dir": str(self.out_dir),
                "curves": str(curves) if curves else None}

    def release(self):
        """Let another run write into the folder (``fit`` does this when it ends)."""
        if self._lock is not None:
            self._lock.release()

    def _held_out_report(self) -> dict:
        """The best checkpoint's validation and test metrics (the test split scored here,
        once), and the baselines' on the same splits."""
        best = self.out_dir / "best.pt"
        model, best_step = self.model, self.step
        if best.is_file():  # the weights model selection chose, not the last ones
            payload = load_checkpoint(best)
            model, best_step = copy.deepcopy(self.model), payload["step"]
            model.load_state_dict(payload["model_state"])
        model.eval()
        splits = getattr(self.task, "eval_splits", ("validation",))
        report = {"validation": {}, "test": {}}
        with torch.no_grad():
            report["validation"] = self.task.evaluate(model)
            if "test" in splits:
                report["test"] = self.task.evaluate(model, split="test")
        baselines = getattr(self.task, "baselines", None)
        report["baselines"] = baselines() if baselines is not None else {}
        report["best_step"] = best_step
        return report

    def _loop(self, log, tensorboard, lead: bool, start_time: float, interrupt) -> str:
        """The training steps, evaluations and checkpoints; returns why it stopped."""
        c, task = self.config, self.task
        self.units_trained = 0
        units, window_seconds = 0, 0.0
        stop_reason = "max_steps"
        with _Progress(c.progress and lead, c.max_steps, self.step, task.metric,
                       quiet=not lead) as bar:
            while self.step < c.max_steps:
                step_start = time.perf_counter()
                self.model.train()
                batch = _to_device(task.train_batch(self.step), self.device)
                with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                                    enabled=c.bf16):
                    loss, self.train_state = task.loss(self.net, batch, self.train_state)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), c.clip_grad_norm or float("inf"))
                skip = _agree(not (torch.isfinite(loss) and torch.isfinite(norm)), self.world)
                if skip:  # a NaN or inf step would poison the weights: skip its update
                    self._skip_bad_step(loss, norm, log, bar)
                else:
                    self.bad_steps = 0
                    self.optimizer.step()
                if c.schedule != "plateau":
                    with warnings.catch_warnings():
                        if skip:  # the schedule follows the step count, skipped or not
                            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
                        self.scheduler.step()
                self.train_state = detach_state(self.train_state)  # truncate BPTT here
                self.step += 1
                n = task.units(batch)
                units += n
                self.units_trained += n
                elapsed = time.perf_counter() - step_start
                window_seconds += elapsed
                self.train_seconds += elapsed
                if self.step % c.log_every == 0 or self.step == c.max_steps:
                    speed = units / max(window_seconds, 1e-9)  # training time only
                    units, window_seconds = 0, 0.0
                    row = {"step": self.step, "split": "train", "loss": loss.item(),
                           "lr": self.optimizer.param_groups[0]["lr"], "tokens_per_s": speed}
                    log.write(row)
                    _tb_write(tensorboard, row)
                    bar.update(self.step, loss=row["loss"], speed=speed, unit="tokens")
                if self.on_step is not None:
                    self.on_step(self.step)
                if self.step % c.eval_every == 0 or self.step == c.max_steps:
                    stop = self._evaluate(log, tensorboard, bar) if lead else False
                    if _agree(stop, self.world):
                        stop_reason = "early_stopping"
                        break
                if c.max_time is not None and _agree(
                        time.perf_counter() - start_time > c.max_time, self.world):
                    stop_reason = "max_time"
                    break
                if _agree(interrupt.requested, self.world):
                    stop_reason = "interrupted" if interrupt.signal in (
                        None, signal.SIGINT) else "terminated"
                    break
        return stop_reason

    def _skip_bad_step(self, loss, norm, log, bar):
        self.bad_steps += 1
        self.skipped_steps += 1
        log.write({"step": self.step + 1, "split": "skipped", "loss": loss.item(),
                   "grad_norm": norm.item()})
        bar.note(f"step {self.step + 1}: skipped, loss {loss.item()} and gradient norm "
                 f"{norm.item()} are not all finite ({self.skipped_steps} skipped so far)")
        if self.bad_steps >= MAX_BAD_STEPS:
            last = self.out_dir / "last.pt"
            kept = f"the last checkpoint ({last}) is intact" if last.is_file() else \
                "no checkpoint had been written yet"
            fixes = ["lower --lr"]
            if self.config.clip_grad_norm is None:
                fixes.append("turn gradient clipping back on (--clip-grad-norm 1)")
            if self.config.bf16:
                fixes.append("drop --bf16")
            raise NumericalError(
                f"training diverged: loss {loss.item()} and gradient norm {norm.item()} were "
                f"not finite for {self.bad_steps} steps in a row (up to step {self.step + 1}); "
                f"{kept}. Try to {' or '.join(fixes)}.")

    def _evaluate(self, log, tensorboard, bar) -> bool:
        """Evaluate, keep the best checkpoint and the last; True when patience runs out."""
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model)
        entry = {"step": self.step, **metrics}
        self.history.append(entry)
        log.write({"step": self.step, "split": "val", **metrics})
        _tb_write(tensorboard, {"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
        value = metrics[self.task.metric]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        # a NaN or inf metric (a model that blew up) is never the best
        improved = math.isfinite(value) and (self.best is None or (
            value > self.best if self.task.higher_is_better else value < self.best))
        if improved:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        self.save("last.pt")
        if improved:
            self.save("best.pt")
        log.flush()  # every row the checkpoint covers is on disk with it
        bar.evaluated(self.step, metrics, self.task.metric)  # after the save: see _Progress
        return self.config.patience is not None and self.bad_evals >= self.config.patience


class _StopOnInterrupt:
    """While training: the first SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after
    the step it is in, so that the run still ends with a final evaluation, its test
    score and a consistent checkpoint; a second one stops at once (KeyboardInterrupt).
    ``signal`` names the first one taken. Only the main thread can take signals;
    elsewhere the default handling stays."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum)
        _say(f"\n{self.signal.name}: stopping after this step (again to stop at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _say(line: str):
    """Print a line; a closed or full stdout (``| head``, ``> /dev/full``) never stops
    training, it only goes quiet."""
    try:
        print(line, flush=True)
    except (OSError, ValueError):  # ValueError: the stream itself was closed
        pass


def _write_json(obj: dict, path: Path):
    """Write ``obj`` as JSON atomically: a temporary file, then renamed into place."""
    write_text(path, json.dumps(obj, indent=1, default=str))


def _differences(saved: dict, current: dict) -> str:
    """Each key where two plain dicts differ, with the checkpoint's value and this run's."""
    keys = sorted(set(saved) | set(current))
    return "; ".join(f"{k}: {saved.get(k)!r:.60} in the checkpoint, {current.get(k)!r:.60} "
                     f"here" for k in keys if saved.get(k) != current.get(k))


def _to_device(obj, device):
    """Tensors, possibly nested in tuples and lists, moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    return obj


class _NoLog:
    """The log of a rank that does not write one."""

    rows: list = []

    def write(self, row):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class _CsvLog:
    """metrics.csv: one row per log or evaluation; columns grow as new metrics appear."""

    def __init__(self, path: Path, upto: int = 0):
        self.path = path
        self.rows = []
        if path.is_file():  # resuming: keep what the run logged up to its checkpoint
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                # a damaged file loses its unreadable rows, not the run
                self.rows = [r for r in csv.DictReader(f)
                             if str(r.get("step")).isdigit() and int(r["step"]) <= upto]

    def write(self, row: dict):
        self.rows.append(row)
        if len(self.rows) % 10 == 0:
            self.flush()

    def flush(self):
        if not self.rows:  # a run that died before its first row leaves no run behind
            return
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self):
        self.flush()


def _tensorboard(out_dir: Path):
    """A TensorBoard writer when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    _record(out_dir, "tensorboard")
    return SummaryWriter(str(out_dir / "tensorboard"))


def _tb_write(writer, row: dict):
    if writer is None:
        return
    for key, value in row.items():
        if key not in ("step", "split") and isinstance(value, (int, float)):
            writer.add_scalar(f"{row.get('split', 'val')}/{key}", value, row["step"])


class _Progress:
    """A rich progress bar with loss, task metric, throughput and ETA; plain lines
    when disabled (and in logs)."""

    def __init__(self, enabled: bool, total: int, start: int, metric: str, *,
                 quiet: bool = False):
        self.enabled, self.total, self.metric, self.quiet = enabled, total, metric, quiet
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            class QuietOnBrokenPipe(Console):
                # rich's own answer to a closed pipe is SystemExit(1), which would end
                # the run before its next checkpoint; going quiet lets training go on
                def on_broken_pipe(self):
                    self.quiet = True

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=QuietOnBrokenPipe())
            self.bar = self.progress.add_task("train", total=total, completed=start, info="")
        self.info = {}

    def __enter__(self):
        self._live = self.progress  # stopped at the end even if output failed on the way
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            try:
                self._live.__exit__(*exc)
            except (OSError, ValueError):
                pass

    def update(self, step, *, loss, speed, unit):
        self.info.update(loss=f"loss {loss:.3f}", speed=f"{speed:,.0f} {unit}/s")
        if self.progress is not None:
            self.progress.update(self.bar, completed=step, info="  ".join(self.info.values()))

    def note(self, line: str):
        """A line of its own above the bar (or printed), such as a skipped step."""
        if self.progress is not None:
            # a closed or full stdout must not stop training: the bar goes, the run goes on
            try:
                self.progress.console.print(line)
            except (OSError, ValueError):
                self.progress, self.quiet = None, True
        elif not self.quiet:
            _say(line)

    def evaluated(self, step, metrics, metric):
        self.info["val"] = f"val {metric} {metrics[metric]:.4g}"
        if self.progress is not None:
            self.progress.update(self.bar, completed=step, info="  ".join(self.info.values()))
        self.note(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


def plot_curves(history: list[dict], path: Path, metric: str, train_rows: list | None = None):
    """A PNG of the training and validation loss, and the task metric, over steps
    (None without matplotlib or history)."""
    if not history:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    steps = [h["step"] for h in history]
    keys = ["loss"] + ([metric] if metric != "loss" else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    for ax, key in zip(list(axes) if len(keys) > 1 else [axes], keys):
        if key == "loss" and train_rows:
            ax.plot([int(r["step"]) for r in train_rows], [float(r["loss"]) for r in train_rows],
                    alpha=0.6, label="train")
        ax.plot(steps, [h[key] for h in history], marker="o", label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
