"""CUDA graphs for the engines' time loops on the GPU (private): the triton engine's and
the Python fused engine's (which runs what no kernel of rnnkit's knows: a user's cell,
the Cho GRU).

A loop of T steps launches 2T-3T kernels (the Python fused engine about 20T); from
Python each launch costs more than a small kernel runs. Captured once in a CUDA graph
per configuration and shape, the whole loop replays as one launch. :class:`Graphs` keeps the captured loops, keyed by what
the caller says the loop depends on (the cell's key, its flags) and every input's
shape, strides, dtype and device, least recently used first out when it holds
:data:`MAX_GRAPHS`.

:data:`LOOPS` is the process's one store, which the engines use.

A captured graph reads and writes fixed addresses. So each call copies its inputs into
the graph's own input buffers, replays, and returns clones of the outputs: a second
forward before a backward never overwrites what the first one saved. Before capture the
loop runs once on a side stream (Triton compiles its kernels there; capture must not
see a first launch). While another capture is running, under a tracer or a torch.func
transform, the loop runs as it is, without a graph; a capture that fails makes the
loop run without one after a single warning.

The bookkeeping is tested on the CPU with :class:`Rerun`, a stand-in whose "graph" runs
the loop again on the same buffers; the real one, :class:`CudaGraphs`, on a GPU.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Callable

import torch

from rnnkit._tracing import is_tracing, transforms_active

#: captured loops kept at once (each holds its inputs' and outputs' buffers)
MAX_GRAPHS = 32


def enabled() -> bool:
    """Graphs are on unless ``RNNKIT_CUDA_GRAPHS=0``."""
    return os.environ.get("RNNKIT_CUDA_GRAPHS", "1") != "0"


class CudaGraphs:
    """Capture with torch.cuda.CUDAGraph."""

    def runs_on(self, t: torch.Tensor) -> bool:
        return t.is_cuda

    def capturing(self) -> bool:
        return torch.cuda.is_current_stream_capturing()

    def capture(self, run: Callable[[], tuple]):
        """(outputs, replay): ``run`` warmed up on a side stream, then captured."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run()
        return outputs, graph.replay


class Rerun:
    """A stand-in for tests without a GPU: "capture" runs ``run`` twice (warm-up, then
    the run whose outputs become the fixed output buffers); "replay" runs it again on
    the same input buffers and copies its results into those output buffers, which is
    what a replayed graph does to its memory."""

    def __init__(self):
        self.captures = 0
        self.replays = 0
        self.active = False  # set by a test: another capture is running

    def runs_on(self, t: torch.Tensor) -> bool:
        return True

    def capturing(self) -> bool:
        return self.active

    def capture(self, run):
        self.captures += 1
        run()
        outputs = run()

        def replay():
            self.replays += 1
            for fixed, new in zip(outputs, run()):
                if fixed is not None:
                    fixed.copy_(new)
        return outputs, replay


def _signature(t):
    if t is None:
        return None
    return (tuple(t.shape), t.stride(), t.dtype, str(t.device))


class Graphs:
    """Captured loops by key; see the module docstring."""

    def __init__(self, backend=None, max_graphs: int | None = None):
        self.backend = backend or CudaGraphs()
        self.max_graphs = MAX_GRAPHS if max_graphs is None else max_graphs
        self._cache: OrderedDict = OrderedDict()
        self._broken: set = set()  # keys whose capture failed: run without a graph

    def __len__(self):
        return len(self._cache)

    def clear(self):
        self._cache.clear()
        self._broken.clear()

    def usable(self, inputs) -> bool:
        """Whether this call may replay a graph: graphs on, tensors where the backend
        runs, and no other capture running (a capture cannot nest)."""
        first = next((t for t in inputs if t is not None), None)
        return (enabled() and first is not None and self.backend.runs_on(first)
                and not self.backend.capturing() and not transforms_active()
                and not is_tracing(first))

    def run(self, key, loop: Callable[..., tuple], inputs: tuple) -> tuple:
        """``loop(*inputs)`` (a tuple of tensors or None), from a graph captured for
        ``key`` and the inputs' signatures; outputs are fresh tensors."""
        if not self.usable(inputs):
            return loop(*inputs)
        full_key = (key, tuple(_signature(t) for t in inputs))
        if full_key in self._broken:
            return loop(*inputs)
        entry = self._cache.get(full_key)
        if entry is None:
            fixed = tuple(None if t is None else torch.empty_like(t).copy_(t) for t in inputs)
            try:
                outputs, replay = self.backend.capture(lambda: loop(*fixed))
            except Exception as e:
                self._broken.add(full_key)
                warnings.warn(f"rnnkit: the triton engine's loop could not be captured in a "
                              f"CUDA graph ({type(e).__name__}: {str(e)[:200]}); it runs "
                              f"without one for this configuration", RuntimeWarning,
                              stacklevel=3)
                return loop(*inputs)
            entry = self._cache[full_key] = (fixed, outputs, replay)
            while len(self._cache) > self.max_graphs:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(full_key)
        fixed, outputs, replay = entry
        for buffer, t in zip(fixed, inputs):
            if t is not None:
                buffer.copy_(t)
        replay()
        return tuple(None if o is None else o.clone() for o in outputs)


#: the process's captured loops (tests put a stand-in's here)
LOOPS = Graphs()
