"""rnnkit: recurrent neural networks with hand-written, fast backpropagation through time."""

from rnnkit.cells.custom import Cell
from rnnkit.layers import (GRU, LSTM, RNN, GRUCell, LSTMCell, MinGRU, MinGRUCell, MinLSTM,
                           MinLSTMCell, Recurrent, RNNCell, States)
from rnnkit.data.streams import batchify
from rnnkit.train.tbptt import detach_state, tbptt_chunks

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MinGRU", "MinLSTM",
           "MinGRUCell", "MinLSTMCell", "States", "Cell", "Recurrent",
           "batchify", "detach_state", "tbptt_chunks", "testing", "quantize",
           "quantize_dynamic"]

from rnnkit import testing  # after the layers, which it tests
from rnnkit import quantize  # after the layers, which it wraps
from rnnkit.quantize import quantize_dynamic
