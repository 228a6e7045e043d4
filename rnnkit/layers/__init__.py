"""RNN, LSTM and GRU layers and cells, drop-in compatible with torch.nn.

The layers subclass ``torch.nn.RNNBase`` for parameter creation, so parameter names,
shapes, registration order, initialisation and ``state_dict`` keys are torch.nn's own,
and a state_dict loads unchanged either way. What they add is the choice of engine
(``backend=``), the cells torch.nn lacks, per-sample ``lengths=`` without packing, and
the whole state trajectory (``return_states=True``).

A layer owns time: it stacks layers and directions, reverses each sequence within its
length for the backward direction, applies dropout between layers and hands each
direction to an engine (or the whole stack to the native engine).

By responsibility: ``_inputs`` (input layout and checks), ``_parameters`` (the variants'
parameters and the initialisations), ``recurrent`` (RNN, LSTM, GRU and Recurrent),
``cell_modules`` (RNNCell, LSTMCell, GRUCell) and ``minimal`` (minGRU and minLSTM).
"""

from rnnkit.layers._inputs import States
from rnnkit.layers.cell_modules import GRUCell, LSTMCell, RNNCell
from rnnkit.layers.minimal import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell
from rnnkit.layers.recurrent import GRU, LSTM, RNN, Recurrent

__all__ = ["States", "RNN", "LSTM", "GRU", "Recurrent", "RNNCell", "LSTMCell", "GRUCell",
           "MinGRU", "MinLSTM", "MinGRUCell", "MinLSTMCell"]
