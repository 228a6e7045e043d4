"""A user's own cell: write its step, get a whole layer (``rnnkit.Recurrent``).

A user's cell states its gate blocks and whether it carries a cell state, and writes one
step from the two projections the layer computes for it::

    class CIFG(rnnkit.Cell):
        \"\"\"LSTM with coupled input and forget gates: f = 1 - i.\"\"\"
        gates = ("i", "g", "o")          # blocks of W_ih / W_hh, each hidden_size rows
        has_cell_state = True

        def step(self, gx, gh, c):       # gx = W_ih x_t + b_ih, gh = W_hh h_{t-1} + b_hh
            i, g, o = (gx + gh).chunk(3, dim=-1)
            i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
            c = (1 - i) * c + i * g
            return o * torch.tanh(c), c  # h_t, c_t

The layer owns everything else: the parameters (torch.nn's names, ``weight_ih_l0`` of
``len(gates) * hidden_size`` rows and so on, torch.nn's uniform initialisation), time,
layers, directions, lengths, dropout, zoneout and recurrent dropout. The step is the one
definition of the cell's math; the fused engine runs it with a derivative derived from
it (autograd through the step alone, once per step, with the weight gradients single
GEMMs over all steps: :class:`UserStep`), the reference engine under autograd; torch's
kernels and the C++ loops, which restate only the built-in cells, refuse it.

For the diagnostics a cell may name its gates (``gate_names``, values in [0, 1]) and
candidates (``candidate_names``) and compute them, ``activations(gx, gh, c)`` returning
``{name: (B, H)}`` at the step's inputs; without them gate statistics say the cell
names none.

A cell may also write the derivative of its step by hand, ``step_backward``: the
gradients of the step's inputs from those of its outputs, at the same inputs. The fused
engine then calls it instead of autograd (no graph is built per step), and
:func:`rnnkit.testing.check_cell` compares it with autograd's derivative of ``step``::

        def step_backward(self, dh, dc, gx, gh, c):
            i, g, o = (gx + gh).chunk(3, dim=-1)
            i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
            tc = torch.tanh((1 - i) * c + i * g)
            dc = dc + dh * o * (1 - tc * tc)           # into c_t: directly and through h_t
            dP = torch.cat([dc * (g - c) * i * (1 - i), dc * i * (1 - g * g),
                            dh * tc * o * (1 - o)], dim=-1)
            return dP, dP, dc * (1 - i)                # d gx, d gh, d c_{t-1}

Such a derivative recomputes the step's activations at every backward step. A cell
written instead to the built-in cells' own contract (:class:`rnnkit.cells.Cell`: a step
that keeps what its derivative needs, the derivative's factors for every step at once,
a backward step into the engine's buffers) runs as fast as a built-in cell of its
shape on the same (Python fused) engine; ``rnnkit.Recurrent`` and
:func:`rnnkit.testing.check_cell` take both kinds, and ``rnnkit.bench.CIFGStep`` is
CIFG written that way.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

import torch
from torch import Tensor

from rnnkit._tracing import _compiling
from rnnkit.cells.base import Cell as _EngineCell
from rnnkit.cells.base import Recurrent


class Cell:
    """Base class of a user's cell; see the module docstring.

    Attributes:
        gates: the names of the blocks of W_ih x_t and W_hh h_{t-1}, in their order;
            each block is hidden_size rows (e.g. ``("i", "g", "o")``).
        has_cell_state: whether the state carries c_t besides h_t.
    """

    gates: tuple[str, ...] = ()
    has_cell_state: bool = False
    #: optional, for ``forget_bias`` and ``init="chrono"``: the gate (one of ``gates``)
    #: whose σ is the share of the state kept per step (the LSTM's "f"), and the one that
    #: lets new input in ("i"); a cell whose keep is 1 - input (CIFG) names only the
    #: input gate
    keep_gate: str | None = None
    input_gate: str | None = None
    #: optional, for the diagnostics (gate statistics, ``rnnkit explain``): the names
    #: of the gates (values in [0, 1]) and of the candidates among what ``activations``
    #: returns
    gate_names: tuple[str, ...] = ()
    candidate_names: tuple[str, ...] = ()

    def step(self, gx: Tensor, gh: Tensor, c: Tensor | None):
        """One step: ``gx`` = W_ih x_t + b_ih and ``gh`` = W_hh h_{t-1} + b_hh, each
        (B, len(gates) * H); ``c`` the previous cell state (B, H), or None without one.
        A step that also names a parameter ``h`` gets h_{t-1} (B, H) there (a GRU-like
        cell mixes it into h_t). Returns h_t (B, H), or (h_t, c_t) for a cell with a
        cell state. Plain differentiable torch."""
        raise NotImplementedError

    #: optional: the hand-written derivative of ``step``, ``step_backward(self, dh, dc,
    #: gx, gh, c[, h])``: given ``dh`` and ``dc`` (None without a cell state), the
    #: gradients reaching h_t and c_t, returns the gradients of the step's inputs in its
    #: order, ``(d gx, d gh, d c)`` (d c None without a cell state), and ``d h`` after
    #: them where the step reads ``h``. The same tensor may serve as d gx and d gh (a
    #: step that reads only gx + gh). Without it, autograd derives it from ``step``.
    step_backward = None

    #: optional: ``activations(self, gx, gh, c[, h])``, the step's gate and candidate
    #: values, ``{name: (B, H)}`` for every name of ``gate_names`` and
    #: ``candidate_names``, at the same inputs as ``step``
    activations = None

    def __repr__(self):
        return f"{type(self).__name__}()"


def check_user_cell(cell) -> Cell:
    """``cell`` if it is a usable :class:`Cell`, else a TypeError or ValueError saying
    what is missing."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an instance of a subclass of rnnkit.Cell (or of "
                        f"rnnkit.cells.Cell, the built-in cells' contract), got "
                        f"{type(cell).__name__}")
    gates = getattr(cell, "gates", None)
    if not isinstance(gates, tuple) or not gates or not all(
            isinstance(g, str) and g for g in gates) or len(set(gates)) != len(gates):
        raise ValueError(f"{type(cell).__name__}.gates must be a non-empty tuple of distinct "
                         f"block names, e.g. ('i', 'g', 'o'), got {gates!r}")
    for attr in ("keep_gate", "input_gate"):
        if getattr(cell, attr) is not None and getattr(cell, attr) not in gates:
            raise ValueError(f"{type(cell).__name__}.{attr} must be one of its gates {gates} "
                             f"or None, got {getattr(cell, attr)!r}")
    if not isinstance(cell.has_cell_state, bool):
        raise TypeError(f"{type(cell).__name__}.has_cell_state must be a bool, got "
                        f"{cell.has_cell_state!r}")
    if type(cell).step is Cell.step:
        raise TypeError(f"{type(cell).__name__} must define step(self, gx, gh, c)")
    for attr in ("gate_names", "candidate_names"):
        names = getattr(cell, attr)
        if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"{type(cell).__name__}.{attr} must be a tuple of names, got "
                            f"{names!r}")
    if (cell.gate_names or cell.candidate_names) and not callable(cell.activations):
        named = cell.gate_names + cell.candidate_names
        raise TypeError(f"{type(cell).__name__} names gates {named} but defines no "
                        "activations(self, gx, gh, c) to compute them")
    return cell


class UserStep(_EngineCell):
    """The engines' view of a user's :class:`Cell`: the recurrent projection
    gh = W_hh h_in + b_hh is computed here (h_in with the recurrent-dropout mask), then
    the user's step. Its derivative is derived from that step: per step, autograd
    through the user's step alone (the pointwise part) gives the gradients of gx, gh
    and the previous state; the recurrent GEMM's backward and the weight gradients are
    the fused engine's, the latter single GEMMs over all steps."""

    def __init__(self, user: Cell):
        super().__init__(layer_norm=False)
        self.user = check_user_cell(user)
        self.num_gates = len(user.gates)
        self.has_cell_state = user.has_cell_state
        self.keep_block, self.input_block = (
            None if name is None else user.gates.index(name)
            for name in (user.keep_gate, user.input_gate))
        self._wants_h = "h" in inspect.signature(user.step).parameters
        self._hand_written = callable(getattr(user, "step_backward", None))
        # what the diagnostics may ask of it (none without the user's activations)
        self.gate_names, self.candidate_names = user.gate_names, user.candidate_names

    @property
    def key(self) -> tuple:
        return (UserStep, ("cell", type(self.user)))

    @property
    def sums_projections(self) -> bool:
        return False  # the user's step gets gx and gh apart, b_hh in gh

    def _user_step(self, gx, gh, c_prev, h_prev):
        out = self.user.step(gx, gh, c_prev, h=h_prev) if self._wants_h else \
            self.user.step(gx, gh, c_prev)
        if self.has_cell_state:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"{self.user!r}.step must return (h_t, c_t): the cell has a "
                                f"cell state, got {type(out).__name__}")
            h, c = out
        else:
            h, c = out, None
        if not isinstance(h, Tensor) or h.shape != h_prev.shape:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"{self.user!r}.step must return h_t of shape "
                             f"{tuple(h_prev.shape)}, got {got}")
        return h, c

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        gh, _ = self.recurrent_projection(h_prev, rec)
        h, c = self._user_step(gx, gh, c_prev, h_prev)
        return h, c, (gx, gh)

    def activations(self, saved, h_prev=None, c_prev=None):
        """The user's ``activations`` at the step's inputs (none without it)."""
        if not callable(self.user.activations):
            return {}
        gx, gh = saved
        out = self.user.activations(gx, gh, c_prev, h=h_prev) if self._wants_h else \
            self.user.activations(gx, gh, c_prev)
        missing = set(self.gate_names + self.candidate_names) - set(out)
        if missing:
            raise ValueError(f"{self.user!r}.activations must return {sorted(missing)} too "
                             f"(its gate_names and candidate_names), got {sorted(out)}")
        return out

    def backward_factors(self, saved, H_prev, C_prev, rec):
        gx, gh = saved
        return {"gx": gx, "gh": gh, "h_prev": H_prev,
                **({"c_prev": C_prev} if self.has_cell_state else {})}

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        found = self._hand_written_backward(dh, dc, factors) if self._hand_written else \
            self._derived_backward(dh, dc, factors)
        for name, out in (("gx", dgx), ("gh", dgh)):
            if found[name] is None:  # the step does not read it
                out.zero_()
            else:
                out.copy_(found[name])
        dh_prev = self.recurrent_backward(dgh, factors, rec, dgh_raw)
        if found.get("h_prev") is not None:  # a step that reads h_{t-1} itself
            dh_prev = dh_prev + found["h_prev"]
        dc_prev = None
        if self.has_cell_state:
            dc_prev = found["c_prev"] if found["c_prev"] is not None else torch.zeros_like(dc)
        return dh_prev, dc_prev

    def _hand_written_backward(self, dh, dc, factors) -> dict:
        """The gradients of the step's inputs from the user's ``step_backward``."""
        args = (factors["gx"], factors["gh"], factors.get("c_prev"))
        found = self.user.step_backward(dh, dc, *args, h=factors["h_prev"]) if \
            self._wants_h else self.user.step_backward(dh, dc, *args)
        names = ("gx", "gh", "c_prev", "h_prev") if self._wants_h else ("gx", "gh", "c_prev")
        if not isinstance(found, tuple) or len(found) != len(names):
            raise TypeError(f"{self.user!r}.step_backward must return a tuple of {len(names)} "
                            f"gradients (of {', '.join(names)}), got "
                            f"{len(found) if isinstance(found, tuple) else type(found).__name__}")
        return dict(zip(names, found))

    def _derived_backward(self, dh, dc, factors) -> dict:
        """The gradients of the step's inputs by reverse mode through the user's step
        alone (an input the step does not read gets zeros or None)."""
        names = [name for name in ("gx", "gh", "c_prev", "h_prev") if name in factors]
        grads = (dh, dc) if self.has_cell_state else (dh,)

        def step(*inputs):
            given = dict(zip(names, inputs))
            h, c = self._user_step(given["gx"], given["gh"], given.get("c_prev"),
                                   given["h_prev"])
            return (h, c) if self.has_cell_state else (h,)

        if _compiling():  # torch.func.vjp, which dynamo traces (autograd.grad it cannot)
            _, pullback = torch.func.vjp(step, *(factors[name] for name in names))
            return dict(zip(names, pullback(grads)))
        with torch.enable_grad():  # eager: autograd.grad, a quarter faster per step here
            inputs = [factors[name].detach().requires_grad_() for name in names]
            return dict(zip(names, torch.autograd.grad(step(*inputs), inputs, grads,
                                                       allow_unused=True)))

    def __repr__(self):
        return repr(self.user)


#: what a cell named by the user may be: a step from the two projections, or a cell of
#: the built-in cells' own contract
CELL_CLASSES = (Cell, _EngineCell)


def cell_name(cell) -> str:
    """``"module:Class"``, the name a config and a checkpoint keep for a user's cell
    class (or instance), which :func:`cell_from_name` imports again; a ValueError where
    the class cannot be found again under that name (defined inside a function)."""
    cls = cell if isinstance(cell, type) else type(cell)
    if not (isinstance(cls, type) and issubclass(cls, CELL_CLASSES)):
        raise TypeError(f"cell must be a subclass of rnnkit.Cell or rnnkit.cells.Cell, or an "
                        f"instance of one, got {cls!r}")
    name = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"cell {cls.__qualname__} is defined inside a function, so a saved "
                         f"model could not find it again; define it at a module's top level")
    return name


def is_cell_name(name) -> bool:
    """Whether ``name`` has the form of :func:`cell_name`'s names, ``module:Class``."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    module, qualname = name.split(":")
    return all(part.isidentifier() for part in [*module.split("."), *qualname.split(".")])


def _import_here_too(module_name: str):
    """The module, looked for on Python's path and then in the current folder (where a
    user running ``rnnkit train --cell mycells:CIFG`` keeps mycells.py; the command's
    own path starts at its script's folder instead)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module_name.split(".")[0] or here in sys.path:
            raise
        sys.path.insert(0, here)
        try:
            return importlib.import_module(module_name)
        finally:
            sys.path.remove(here)


def cell_from_name(name: str) -> type:
    """The cell class (of :data:`CELL_CLASSES`) that ``name`` (``"module:Class"``) names,
    by importing the module: this runs the module's code, so callers load such a name
    from a saved file only with the user's consent (``trust_code``)."""
    if not is_cell_name(name):
        raise ValueError(f"cell must be a built-in cell's name or 'module:Class' naming an "
                         f"rnnkit.Cell or rnnkit.cells.Cell subclass, got {name!r}")
    module_name, qualname = name.split(":")
    try:
        found = _import_here_too(module_name)
    except ImportError as e:
        raise ValueError(f"cell {name!r}: cannot import module {module_name!r} ({e}); is it "
                         f"on the Python path (PYTHONPATH, or the current folder)?") from None
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"cell {name!r}: module {module_name!r} has no {qualname!r}")
    if not (isinstance(found, type) and issubclass(found, CELL_CLASSES)):
        raise ValueError(f"cell {name!r} is {found!r}, not a subclass of rnnkit.Cell or "
                         f"rnnkit.cells.Cell")
    return found
