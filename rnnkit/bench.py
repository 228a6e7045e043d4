"""The benchmark behind ``rnnkit bench``: rnnkit's engines against torch.nn, in one run.

For each cell and size it times forward only (inference, no grad) and forward+backward
for torch.nn (where it has the cell; the variants are compared with the plain torch.nn
cell of their family) and for each of rnnkit's engines. Contenders run alternately,
rep after rep, in a rotating order, after warm-up; each contender's time is the median
of its reps, and each ratio to torch.nn is the median of the per-rep ratios, so both
sides of every ratio saw the same machine state. The peak memory of one
forward+backward is measured apart from the timings. Streaming inference (one step at
a time at batch 1, as when generating text) compares rnnkit's cells with torch.nn's.

The cells ``mingru`` and ``minlstm`` (opt-in: ``--cells mingru,minlstm``) have a section of
their own: forward and forward+backward of MinGRU / MinLSTM with each scan method against
torch.nn.GRU and rnnkit's GRU (native and fused) of the same width, at long sequences
(default T = 256, 1024, 4096; B = 16, I = H = 128), every contender in the same rotation,
with each ratio the median of per-round ratios against each of the three GRUs.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

import rnnkit
from rnnkit._files import write_text
from rnnkit.engines import BACKENDS
from rnnkit.engines.scan import METHODS as SCAN_METHODS

class CIFG(rnnkit.Cell):
    """The cell extension point's example, timed as a user's cell: an LSTM with coupled
    input and forget gates, f = 1 - i (three gate blocks of the LSTM's four)."""

    gates = ("i", "g", "o")
    has_cell_state = True

    def step(self, gx, gh, c):
        i, g, o = (gx + gh).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c + i * g
        return o * torch.tanh(c), c


class HandWrittenCIFG(CIFG):
    """CIFG with the derivative of its step written by hand (the extension point's
    ``step_backward``), as the documentation shows it."""

    def step_backward(self, dh, dc, gx, gh, c):
        i, g, o = (gx + gh).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        tc = torch.tanh((1 - i) * c + i * g)
        dc = dc + dh * o * (1 - tc * tc)
        dP = torch.cat([dc * (g - c) * i * (1 - i), dc * i * (1 - g * g),
                        dh * tc * o * (1 - o)], dim=-1)
        return dP, dP, dc * (1 - i)


class CIFGStep(rnnkit.cells.Cell):
    """CIFG written to the built-in cells' own contract (:class:`rnnkit.cells.Cell`), as
    rnnkit's LSTM is: the step keeps its activations, the derivative's factors are
    computed for every step at once, and each backward step is a few in-place products."""

    num_gates = 3  # i, g, o
    has_cell_state = True
    input_block = 0  # the state kept is 1 - i: forget_bias and chrono set b_i
    gate_names, candidate_names = ("i", "o"), ("g",)
    options = ()

    def __init__(self):
        super().__init__()  # no layer norm: the step and its derivative have none

    def step(self, gx, h_prev, c_prev, rec):
        P, _ = self.summed_preactivation(gx, h_prev, rec)  # gx + W_hh h_in: (B, 3H)
        H = c_prev.shape[1]
        i, o = torch.sigmoid(P[:, :H]), torch.sigmoid(P[:, 2 * H:])
        g = torch.tanh(P[:, H:2 * H])
        c = torch.addcmul(c_prev, i, g - c_prev)  # (1 - i) c_prev + i g
        tc = torch.tanh(c)
        return o * tc, c, (i, g, o, tc)

    def activations(self, saved, h_prev=None, c_prev=None):
        return dict(zip("igo", saved[:3]))

    def backward_factors(self, saved, H_prev, C_prev, rec):
        i, g, o, tc = saved  # each (T, B, H)
        d_sigmoid, d_tanh = rnnkit.cells.sigmoid_grad, rnnkit.cells.tanh_grad
        return {"dc_to_ig": torch.stack([(g - C_prev) * d_sigmoid(i), i * d_tanh(g)], 2),
                "du_to_o": tc * d_sigmoid(o), "du_to_c": o * d_tanh(tc),
                "dc_to_cprev": 1 - i}

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        B, H = dc.shape
        dc = torch.addcmul(dc, dh, factors["du_to_c"])  # into c_t: directly and via h_t
        rnnkit.cells.mul_into(dgx[:, :2 * H].view(B, 2, H), dc.unsqueeze(1),
                              factors["dc_to_ig"])
        rnnkit.cells.mul_into(dgx[:, 2 * H:], dh, factors["du_to_o"])
        return self.recurrent_backward(dgh, factors, rec, dgh_raw), dc * factors["dc_to_cprev"]

    def __repr__(self):
        return "CIFGStep()"


#: the cells the benchmark knows: (rnnkit layer maker, options, torch.nn class to compare
#: with); a user's cell (cifg) is compared with the torch.nn layer of its shape
CELLS: dict[str, tuple[Callable, dict, type]] = {
    "rnn": (rnnkit.RNN, {}, torch.nn.RNN),
    "lstm": (rnnkit.LSTM, {}, torch.nn.LSTM),
    "gru": (rnnkit.GRU, {}, torch.nn.GRU),
    "lstm-layer-norm": (rnnkit.LSTM, {"layer_norm": True}, torch.nn.LSTM),
    "lstm-zoneout": (rnnkit.LSTM, {"zoneout": 0.1}, torch.nn.LSTM),
    "lstm-peephole": (rnnkit.LSTM, {"peephole": True}, torch.nn.LSTM),
    "gru-layer-norm": (rnnkit.GRU, {"layer_norm": True}, torch.nn.GRU),
    "cifg": (functools.partial(rnnkit.Recurrent, CIFG()), {}, torch.nn.LSTM),
    "cifg-hand-written": (functools.partial(rnnkit.Recurrent, HandWrittenCIFG()), {},
                          torch.nn.LSTM),
    "cifg-built-in-contract": (functools.partial(rnnkit.Recurrent, CIFGStep()), {},
                               torch.nn.LSTM),
}
STREAM_CELLS = {
    "rnn": (rnnkit.RNNCell, torch.nn.RNNCell),
    "lstm": (rnnkit.LSTMCell, torch.nn.LSTMCell),
    "gru": (rnnkit.GRUCell, torch.nn.GRUCell),
}
#: the scan section's cells: rnnkit layer by name
SCAN_CELLS: dict[str, type] = {"mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}
#: the GRUs they are measured against, by contender name: (class, forward kwargs)
SCAN_BASELINES = {"torch.nn GRU": (torch.nn.GRU, {}),
                  "rnnkit GRU native": (rnnkit.GRU, {"backend": "native"}),
                  "rnnkit GRU fused": (rnnkit.GRU, {"backend": "fused"})}
#: (T, B, I, H) of the scan section: long sequences, where a scan should pull ahead
SCAN_SIZES = [(256, 16, 128, 128), (1024, 16, 128, 128), (4096, 16, 128, 128)]
#: (T, B, I, H): the grid of the benchmark issue
DEFAULT_SIZES = [(100, 32, 256, 256), (200, 8, 32, 64), (100, 64, 512, 512), (50, 1, 64, 64),
                 (1000, 16, 64, 128)]
MODES = ("forward", "forward+backward")


@dataclass
class BenchConfig:
    """What to benchmark and how."""

    #: cell names from CELLS, and from SCAN_CELLS for the scan section
    cells: list[str] = field(default_factory=lambda: list(CELLS))
    #: sizes as (T, B, I, H): sequence length, batch, input size, hidden size
    sizes: list[tuple[int, int, int, int]] = field(default_factory=lambda: list(DEFAULT_SIZES))
    #: rnnkit engines to time (those that cannot run a cell are skipped for it); "fused"
    #: is always one of its two implementations, so they are timed by name
    engines: list[str] = field(default_factory=lambda: [
        "native", "triton", "fused-compiled", "fused-python", "reference"])
    #: "cpu" or "cuda"
    device: str = "cpu"
    #: "float32", "float64" or "bfloat16"
    dtype: str = "float32"
    #: torch CPU threads (None leaves torch's default)
    threads: int | None = None
    #: timed repetitions per contender (the median is reported)
    repeats: int = 3
    #: untimed runs per contender before timing
    warmup: int = 1
    #: also time streaming inference, one step at a time at batch 1
    streaming: bool = True
    #: hidden size (and input size) of the streaming test
    stream_hidden: int = 512
    #: steps of the streaming test
    stream_steps: int = 200
    #: sizes (T, B, I, H) of the scan section (cells mingru, minlstm)
    scan_sizes: list[tuple[int, int, int, int]] = field(default_factory=lambda: list(SCAN_SIZES))
    #: scan methods timed in the scan section (those that cannot run here are skipped)
    scan_methods: list[str] = field(default_factory=lambda: [
        "compiled", "chunked", "log", "triton", "sequential"])

    def __post_init__(self):
        unknown = [c for c in self.cells if c not in CELLS and c not in SCAN_CELLS]
        if unknown:
            raise ValueError(f"cells must be among {list(CELLS) + list(SCAN_CELLS)}, "
                             f"got {unknown}")
        bad = [m for m in self.scan_methods if m not in SCAN_METHODS or m == "auto"]
        if bad:
            raise ValueError(f"scan_methods must be among {list(SCAN_METHODS[1:])}, got {bad}")
        bad = [e for e in self.engines if e not in BACKENDS or e == "auto"]
        if bad:
            raise ValueError(f"engines must be among {[b for b in BACKENDS if b != 'auto']}, got {bad}")
        for size in [*self.sizes, *self.scan_sizes]:
            if len(size) != 4 or not all(isinstance(n, int) and n > 0 for n in size):
                raise ValueError(f"each size must be four positive ints (T, B, I, H), got {size!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA device")
        if self.dtype not in ("float32", "float64", "bfloat16"):
            raise ValueError(f"dtype must be float32, float64 or bfloat16, got {self.dtype!r}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _peak_bytes(fn: Callable[[], None], device: str) -> int | None:
    """Peak bytes allocated by ``fn`` above what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # On the CPU the profiler records every allocation and free with its size.
    try:
        from torch.profiler import ProfilerActivity, profile
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU],
                                      profile_memory=True) as prof:
            fn()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        current = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            current += e.nbytes()
            peak = max(peak, current)
        return peak
    except Exception:  # the profiler's internals differ between torch versions
        return None


def _release_heap():
    """Give freed heap memory back to the OS (glibc only). Each size leaves its own
    pattern of free fragments; over a whole grid they added up to tens of GB of
    resident memory that the process no longer used."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: some builds of the profiler's native library log each
    start and stop there, which would bury the benchmark's own output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _time_rotating(work: dict[str, Callable[[], None]], config: BenchConfig) -> dict:
    """Warm every contender up, then time ``config.repeats`` rounds in which the order
    rotates, so that no contender always runs first (or right after a given other)."""
    for fn in work.values():
        for _ in range(config.warmup):
            fn()
    names = list(work)
    times = {c: [] for c in names}
    for rep in range(config.repeats):
        shift = rep % len(names)
        for c in names[shift:] + names[:shift]:
            times[c].append(_timed(work[c], config.device))
    return times


def _ratio(times: dict, c: str) -> float:
    """Median over rounds of c's time / torch.nn's time in the same round."""
    return statistics.median(t / ref for t, ref in zip(times[c], times["torch.nn"]))


def _per_step_rows(cell: str, hidden: int, steps: int, times: dict) -> list[dict]:
    return [{"cell": cell, "hidden": hidden, "contender": c,
             "us_per_step": statistics.median(times[c]) / steps * 1e6,
             "ratio_to_torch_nn": _ratio(times, c)} for c in times]


def _workloads(model, x: torch.Tensor, kwargs: dict):
    """(forward-only, forward+backward) closures for one contender."""
    def forward():
        with torch.no_grad():
            model(x, **kwargs)

    def forward_backward():
        out, _ = model(x, **kwargs)
        out.sum().backward()
        for p in model.parameters():
            p.grad = None
        x.grad = None

    return {"forward": forward, "forward+backward": forward_backward}


def _contenders(name: str, size, config: BenchConfig):
    """{contender name: model, kwargs} for one cell and size, all with the same weights."""
    cls, options, torch_cls = CELLS[name]
    T, B, I, H = size
    factory = {"device": config.device, "dtype": getattr(torch, config.dtype)}
    ours = cls(I, H, **options, **factory)
    theirs = torch_cls(I, H, **factory)
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    if all(ours.state_dict()[k].shape == shape for k, shape in shapes.items()):
        theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if k in shapes})
    # else (a user's cell of another shape): each keeps its own weights, timed alike
    out = {"torch.nn": (theirs, {})}
    for engine in config.engines:
        if engine == "triton" and config.device == "cpu":
            continue  # the GPU engine: on the CPU only Triton's (slow) interpreter runs it
        try:
            ours.resolve_backend(engine)
        except ValueError:  # e.g. native for a variant torch's kernels lack
            continue
        out[f"rnnkit {engine}"] = (ours, {"backend": engine})
    return out


def _machine(config: BenchConfig) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": config.device}
    if config.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
        # TF32 changes both speed and precision: record what each side was allowed
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def run(config: BenchConfig | None = None, *, progress: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark; returns a JSON-ready dict (machine, config, results)."""
    config = config or BenchConfig()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    results = []
    for name in [c for c in config.cells if c in CELLS]:
        for size in config.sizes:
            if progress:
                progress(f"{name} {size}")
            results.extend(_bench_one(name, size, config))
            _release_heap()
    scan_cells = [c for c in config.cells if c in SCAN_CELLS]
    scan_rows = []
    for size in config.scan_sizes if scan_cells else []:
        if progress:
            progress(f"{', '.join(scan_cells)} {size}")
        scan_rows.extend(_bench_scan(scan_cells, size, config))
        _release_heap()
    streaming = _bench_streaming(config) + _bench_generation(config) if config.streaming else []
    return {"machine": _machine(config), "config": asdict(config), "results": results,
            "streaming": streaming, "scan": scan_rows,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _bench_one(name: str, size, config: BenchConfig) -> list[dict]:
    T, B, I, H = size
    contenders = _contenders(name, size, config)
    x = torch.randn(T, B, I, device=config.device, dtype=getattr(torch, config.dtype),
                    requires_grad=True)
    rows = []
    for mode in MODES:
        for model, _ in contenders.values():  # inference in eval mode, training in train
            model.train(mode == "forward+backward")
        work = {c: _workloads(m, x, kw)[mode] for c, (m, kw) in contenders.items()}
        times = _time_rotating(work, config)
        for c in work:
            row = {"cell": name, "size": list(size), "mode": mode, "contender": c,
                   "seconds": statistics.median(times[c]), "ratio_to_torch_nn": _ratio(times, c)}
            if mode == "forward+backward":
                # the reference engine's tens of thousands of per-step ops made the
                # profiler itself grow past the machine's memory: its peak goes unmeasured
                row["peak_bytes"] = None if c == "rnnkit reference" else \
                    _peak_bytes(work[c], config.device)
            rows.append(row)
    return rows


def _bench_scan(cells: list[str], size, config: BenchConfig) -> list[dict]:
    """The scan section at one size: MinGRU / MinLSTM with each scan method against the
    three GRUs, forward and forward+backward, all in one rotation."""
    T, B, I, H = size
    factory = {"device": config.device, "dtype": getattr(torch, config.dtype)}
    contenders = {}
    first = None
    for name, (cls, kwargs) in SCAN_BASELINES.items():
        model = cls(I, H, **factory)
        if first is None:
            first = model
        else:  # every GRU with torch.nn's weights
            model.load_state_dict(first.state_dict())
        if "backend" in kwargs:
            try:
                model.resolve_backend(kwargs["backend"])
            except ValueError:
                continue
        contenders[name] = (model, kwargs)
    for cell in cells:
        layer = SCAN_CELLS[cell](I, H, **factory)
        for method in config.scan_methods:
            if method == "triton" and config.device == "cpu":
                continue  # Triton's CPU interpreter checks kernels; it is not a speed
            try:
                layer.resolve_scan(method)
            except ValueError:  # e.g. compiled off the CPU, triton without Triton
                continue
            contenders[f"rnnkit {type(layer).__name__} {method}"] = (layer, {"scan": method})
    x = torch.randn(T, B, I, **factory, requires_grad=True)
    rows = []
    for mode in MODES:
        for model, _ in contenders.values():
            model.train(mode == "forward+backward")
        work = {c: _workloads(m, x, kw)[mode] for c, (m, kw) in contenders.items()}
        times = _time_rotating(work, config)
        for c in work:
            ratios = {base: statistics.median(t / ref for t, ref in zip(times[c], times[base]))
                      for base in SCAN_BASELINES if base in times}
            rows.append({"size": list(size), "mode": mode, "contender": c,
                         "seconds": statistics.median(times[c]), "ratios": ratios})
    return rows


def _bench_streaming(config: BenchConfig) -> list[dict]:
    """One step at a time at batch 1 without grad, as when generating token by token."""
    H, steps = config.stream_hidden, config.stream_steps
    factory = {"device": config.device, "dtype": getattr(torch, config.dtype)}
    rows = []
    for name in [c for c in STREAM_CELLS if c in {n.split("-")[0] for n in config.cells}]:
        ours_cls, theirs_cls = STREAM_CELLS[name]
        ours, theirs = ours_cls(H, H, **factory), theirs_cls(H, H, **factory)
        theirs.load_state_dict(ours.state_dict())
        xs = torch.randn(steps, 1, H, **factory)

        def loop(cell):
            def fn():
                with torch.no_grad():
                    state = None
                    for t in range(steps):
                        state = cell(xs[t], state)
            return fn

        times = _time_rotating({"torch.nn": loop(theirs), "rnnkit": loop(ours)}, config)
        rows += _per_step_rows(name, H, steps, times)
    return rows


def _bench_generation(config: BenchConfig) -> list[dict]:
    """LanguageModel.generate against a plain torch.nn.LSTM step loop that samples the
    same way: time per generated token at batch 1 (one layer)."""
    from rnnkit.models import LanguageModel, LanguageModelConfig, RecurrentConfig, sample

    H, steps, V = config.stream_hidden, config.stream_steps, 256
    device = config.device
    lm = LanguageModel(LanguageModelConfig(vocab_size=V, embedding_size=H,
                                           rnn=RecurrentConfig("lstm", H))).to(device).eval()
    embedding, head = lm.embedding, lm.head
    lstm = torch.nn.LSTM(H, H, batch_first=True).to(device)
    lstm.load_state_dict(lm.rnn.state_dict())

    def ours():
        lm.generate([1, 2, 3], steps, seed=0, top_k=40)

    @torch.no_grad()
    def theirs():  # what a user would write by hand with torch.nn
        gen = torch.Generator(device=device)
        gen.manual_seed(0)
        out, state = lstm(embedding(torch.tensor([[1, 2, 3]], device=device)))
        logits = head(out[:, -1])
        for _ in range(steps):
            token = sample(logits[0], top_k=40, generator=gen)
            out, state = lstm(embedding(torch.tensor([[token]], device=device)), state)
            logits = head(out[:, 0])

    times = _time_rotating({"torch.nn": theirs, "rnnkit": ours}, config)
    return _per_step_rows("lm-generate", H, steps, times)


def _fmt_size(size) -> str:
    return "(" + ", ".join(map(str, size)) + ")"


def markdown(report: dict) -> str:
    """The report as markdown tables: one row per cell, size and contender."""
    m = report["machine"]
    lines = [f"rnnkit bench, {report['date']}: torch {m['torch']}, {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else f", {m['threads']} threads")
             + f", {report['config']['dtype']}, median of {report['config']['repeats']} runs;"
             " ratio = time / torch.nn's time in the same run (lower is better)."]
    if m["device"] == "cpu" and "triton" in report["config"].get("engines", ()):
        lines[0] += (" The triton engine is the GPU's: on the CPU only Triton's interpreter "
                     "would run it, so it is not timed here.")
    if report["results"]:
        lines += ["", "| cell | (T, B, I, H) | contender | forward ms | ratio | fwd+bwd ms | "
                  "ratio | peak MB fwd+bwd |", "|---|---|---|---:|---:|---:|---:|---:|"]
    rows: dict[tuple, dict] = {}
    for r in report["results"]:
        key = (r["cell"], tuple(r["size"]), r["contender"])
        rows.setdefault(key, {})[r["mode"]] = r
    for (cell, size, contender), modes in rows.items():
        f, fb = modes.get("forward"), modes.get("forward+backward")
        peak = fb.get("peak_bytes") if fb else None
        lines.append(
            f"| {cell} | {_fmt_size(size)} | {contender} | "
            f"{f['seconds'] * 1e3:.2f} | {f['ratio_to_torch_nn']:.2f} | "
            f"{fb['seconds'] * 1e3:.2f} | {fb['ratio_to_torch_nn']:.2f} | "
            f"{'' if peak is None else f'{peak / 2**20:.1f}'} |")
    if report.get("scan"):
        lines += ["", scan_markdown(report["scan"])]
    if report.get("streaming"):
        s0 = report["streaming"][0]
        lines += ["", f"Streaming inference, batch 1, hidden {s0['hidden']}, one step per call "
                  "(lm-generate: LanguageModel.generate, top-k sampling, per token):", "",
                  "| cell | contender | µs per step | ratio |", "|---|---|---:|---:|"]
        for s in report["streaming"]:
            lines.append(f"| {s['cell']} | {s['contender']} | {s['us_per_step']:.1f} | "
                         f"{s['ratio_to_torch_nn']:.2f} |")
    return "\n".join(lines) + "\n"


def scan_markdown(rows: list[dict]) -> str:
    """The scan section as a table: one row per size and contender; each ratio is the
    time over that GRU's time in the same rounds (lower is better)."""
    bases = [b for b in SCAN_BASELINES if b in rows[0]["ratios"]]
    short = {"torch.nn GRU": "torch.nn", "rnnkit GRU native": "GRU native",
             "rnnkit GRU fused": "GRU fused"}
    lines = ["minGRU / minLSTM against GRUs of the same width (fwd+bwd ratios: time / that "
             "GRU's time in the same rounds, lower is better):", "",
             "| (T, B, I, H) | contender | forward ms | fwd ÷ torch.nn | fwd+bwd ms | "
             + " | ".join(f"÷ {short[b]}" for b in bases) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * len(bases)]
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((tuple(r["size"]), r["contender"]), {})[r["mode"]] = r
    for (size, contender), modes in by_key.items():
        f, fb = modes["forward"], modes["forward+backward"]
        to_torch = f["ratios"].get("torch.nn GRU")
        lines.append(f"| {_fmt_size(size)} | {contender} | {f['seconds'] * 1e3:.1f} | "
                     f"{'' if to_torch is None else f'{to_torch:.3f}'} | "
                     f"{fb['seconds'] * 1e3:.1f} | "
                     + " | ".join(f"{fb['ratios'][b]:.3f}" for b in bases) + " |")
    return "\n".join(lines)


def save(report: dict, folder: str | Path) -> tuple[Path, Path]:
    """Write the report as JSON and markdown into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = report["machine"]
    stamp = report["date"].replace(":", "").replace("-", "")[:13]
    where = m["device"] if m["device"] != "cpu" else f"cpu{m['threads']}t"
    stem = folder / f"{stamp}-{where}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    write_json(report, json_path)
    write_text(md_path, markdown(report))
    return json_path, md_path


def write_json(report: dict, path: str | Path) -> None:
    write_text(path, json.dumps(report, indent=1) + "\n")
