"""The one table of layer configurations that the property tests run over: every cell key
of every family (each option and their combinations the cells take), the min layers and
a user's cell, with the torch.nn twin where torch.nn has the same layer.

A new cell or option gets its row here, and ``test_every_cell_key_has_a_configuration``
fails until it has one; the tests of transforms, second derivatives, mixed precision and
quantization then cover it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

import rnnkit
from rnnkit.bench import CIFGStep
from test_custom_cell import CIFG, HandWrittenCIFG


class Configuration(NamedTuple):
    #: the layer class (or a maker taking input_size, hidden_size and keywords)
    layer: object
    #: its options
    options: dict
    #: torch.nn's layer of the same math, or None
    twin: type | None = None

    def make(self, input_size: int = 3, hidden_size: int = 4, **kwargs):
        return self.layer(input_size, hidden_size, **self.options, **kwargs)


def _user(input_size, hidden_size, **kwargs):
    return rnnkit.Recurrent(HandWrittenCIFG(), input_size, hidden_size, **kwargs)


def _user_derived(input_size, hidden_size, **kwargs):
    return rnnkit.Recurrent(CIFG(), input_size, hidden_size, **kwargs)


def _user_of_the_built_in_contract(input_size, hidden_size, **kwargs):
    return rnnkit.Recurrent(CIFGStep(), input_size, hidden_size, **kwargs)


CONFIGURATIONS: dict[str, Configuration] = {
    "rnn-tanh": Configuration(rnnkit.RNN, {}, torch.nn.RNN),
    "rnn-relu": Configuration(rnnkit.RNN, {"nonlinearity": "relu"}, torch.nn.RNN),
    "rnn-sigmoid": Configuration(rnnkit.RNN, {"nonlinearity": "sigmoid"}),
    "rnn-tanh-layer-norm": Configuration(rnnkit.RNN, {"layer_norm": True}),
    "rnn-relu-layer-norm": Configuration(rnnkit.RNN, {"nonlinearity": "relu",
                                                      "layer_norm": True}),
    "rnn-sigmoid-layer-norm": Configuration(rnnkit.RNN, {"nonlinearity": "sigmoid",
                                                         "layer_norm": True}),
    "lstm": Configuration(rnnkit.LSTM, {}, torch.nn.LSTM),
    "lstm-proj": Configuration(rnnkit.LSTM, {"proj_size": 2}, torch.nn.LSTM),
    "lstm-layer-norm": Configuration(rnnkit.LSTM, {"layer_norm": True}),
    "lstm-peephole": Configuration(rnnkit.LSTM, {"peephole": True}),
    "lstm-layer-norm-peephole": Configuration(rnnkit.LSTM, {"layer_norm": True,
                                                            "peephole": True}),
    "gru": Configuration(rnnkit.GRU, {}, torch.nn.GRU),
    "gru-layer-norm": Configuration(rnnkit.GRU, {"layer_norm": True}),
    "gru-cho": Configuration(rnnkit.GRU, {"reset_after": False}),
    "mingru": Configuration(rnnkit.MinGRU, {}),
    "minlstm": Configuration(rnnkit.MinLSTM, {}),
    "user-cell": Configuration(_user, {}),
    "user-cell-derived": Configuration(_user_derived, {}),
    "user-cell-built-in-contract": Configuration(_user_of_the_built_in_contract, {}),
}

#: the configurations whose layers pick engines (the min layers run the scan instead)
ENGINE_LAYERS = {name: c for name, c in CONFIGURATIONS.items()
                 if c.layer not in (rnnkit.MinGRU, rnnkit.MinLSTM)}
#: the one-direction engines and torch's kernels, by backend name
ENGINES = ("native", "fused-compiled", "fused-python", "reference")


def engine_cases(configurations=ENGINE_LAYERS, engines=ENGINES, **extra) -> list:
    """(name, engine) for each configuration and each engine that takes it."""
    cases = []
    for name, configuration in configurations.items():
        layer = configuration.make(**extra)
        for engine in engines:
            try:
                layer.resolve_backend(engine)
            except ValueError:
                continue
            cases.append((name, engine))
    return cases
