"""What a recurrence is: one step of each cell family and its hand-written derivative.

:class:`Cell` (``base``) is the contract every built-in cell is written to, and a public
one: ``rnnkit.Recurrent`` takes a cell of it as it takes a user's :class:`rnnkit.Cell`,
and ``rnnkit.LSTM`` is ``rnnkit.Recurrent(LSTMStep(), ...)``. Besides the cells this
package gives the pieces they are written with (layer norm and its derivatives, σ' and
tanh' from the outputs, products into a buffer).

The names end in ``Step`` to keep them apart from the nn.Module cells in
:mod:`rnnkit.layers` (``rnnkit.LSTMCell`` and friends), which are built on them.
"""

from rnnkit._tracing import addcmul_into, mul_into
from rnnkit.cells.base import (Cell, Parameter, Recurrent, layer_norm, layer_norm_backward,
                               layer_norm_param_grads, sigmoid_grad, tanh_grad)
from rnnkit.cells.gru import GRUStep
from rnnkit.cells.lstm import LSTMStep
from rnnkit.cells.minrnn import MinGRUStep, MinLSTMStep, MinRNNStep
from rnnkit.cells.rnn import NONLINEARITIES, RNNStep

__all__ = ["Cell", "Parameter", "Recurrent", "RNNStep", "LSTMStep", "GRUStep", "MinRNNStep",
           "MinGRUStep", "MinLSTMStep", "NONLINEARITIES",
           # for writing a cell to this contract: the pieces the built-in cells use
           "layer_norm", "layer_norm_backward", "layer_norm_param_grads", "sigmoid_grad",
           "tanh_grad", "mul_into", "addcmul_into"]
