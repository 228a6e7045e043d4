"""What a recurrence is: one step of each cell family and its hand-written derivative.

The names end in ``Step`` to keep them apart from the nn.Module cells in
:mod:`rnnkit.layers` (``rnnkit.LSTMCell`` and friends), which are built on them.
"""

from rnnkit.cells.base import Cell, Recurrent
from rnnkit.cells.gru import GRUStep
from rnnkit.cells.lstm import LSTMStep
from rnnkit.cells.minrnn import MinGRUStep, MinLSTMStep, MinRNNStep
from rnnkit.cells.rnn import NONLINEARITIES, RNNStep

__all__ = ["Cell", "Recurrent", "RNNStep", "LSTMStep", "GRUStep", "MinRNNStep", "MinGRUStep",
           "MinLSTMStep", "NONLINEARITIES"]
