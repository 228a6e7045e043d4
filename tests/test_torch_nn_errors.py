"""Where torch.nn raises for an input, rnnkit raises an instance of torch.nn's exception
type, with torch.nn's key phrase in its message: code that catches torch.nn's errors,
or matches their words, keeps working after the swap."""

import re

import pytest
import torch
from torch import nn

import rnnkit

#: name: (what to run given a namespace of the six classes, torch's key phrase as a regex)
CASES = {
    "feature size": (lambda M: M.LSTM(10, 4)(torch.randn(5, 2, 3)),
                     r"input\.size\(-1\) must be equal to input_size\. Expected 10, got 3"),
    "hidden shape": (lambda M: M.GRU(3, 4)(torch.randn(5, 2, 3), torch.randn(1, 3, 4)),
                     r"Expected hidden size \(1, 2, 4\), got \[1, 3, 4\]"),
    "cell state shape": (lambda M: M.LSTM(3, 4)(torch.randn(5, 2, 3), (
        torch.randn(1, 2, 4), torch.randn(2, 2, 4))),
        r"Expected hidden\[1\] size \(1, 2, 4\), got \[2, 2, 4\]"),
    "zero length": (lambda M: M.LSTM(3, 4)(torch.randn(0, 2, 3)),
                    r"Expected sequence length to be larger than 0 in RNN"),
    "cell batch": (lambda M: M.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(3, 4),
                                                                 torch.randn(3, 4))),
                   r"Input batch size 2 doesn't match hidden0 batch size 3"),
    "cell input size": (lambda M: M.GRUCell(3, 4)(torch.randn(2, 5)),
                        r"input has inconsistent input_size: got 5 expected 3"),
    "cell hidden size": (lambda M: M.RNNCell(3, 4)(torch.randn(2, 3), torch.randn(2, 5)),
                         r"hidden0 has inconsistent hidden_size: got 5, expected 4"),
    "dtype": (lambda M: M.LSTM(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64)),
              r"input dtype \(torch\.float64\) does not match weight dtype \(torch\.float32\)"),
    "proj_size of a GRU": (lambda M: M.GRU(3, 4, proj_size=2),
                           r"proj_size argument is only supported for LSTM, not RNN or GRU"),
    "proj_size of an RNN": (lambda M: M.RNN(3, 4, proj_size=2),
                            r"proj_size argument is only supported for LSTM, not RNN or GRU"),
    "nonlinearity": (lambda M: M.RNN(3, 4, nonlinearity="gelu"),
                     r"Unknown nonlinearity 'gelu'"),
    "dropout": (lambda M: M.LSTM(3, 4, dropout=1.5), r"dropout should be a number in range"),
    "proj_size too big": (lambda M: M.LSTM(3, 4, proj_size=4),
                          r"proj_size has to be smaller than hidden_size"),
    "hidden_size 0": (lambda M: M.LSTM(3, 0), r"hidden_size must be greater than zero"),
}


class _Classes:
    def __init__(self, module):
        for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
            setattr(self, name, getattr(module, name))


@pytest.mark.parametrize("case", list(CASES))
def test_rnnkit_raises_what_torch_nn_raises(case):
    run, phrase = CASES[case]
    with pytest.raises(Exception) as theirs:
        run(_Classes(nn))
    assert re.search(phrase, str(theirs.value)), "the phrase is torch.nn's own"
    with pytest.raises(type(theirs.value)) as ours:
        run(_Classes(rnnkit))
    assert re.search(phrase, str(ours.value)), str(ours.value)


def test_rnnkits_own_types_still_hold():
    """The errors rnnkit gave before stay what they were, besides torch.nn's type."""
    with pytest.raises(ValueError, match="input must have 10 features"):
        rnnkit.LSTM(10, 4)(torch.randn(5, 2, 3))
    with pytest.raises(TypeError, match="does not match weight dtype"):
        rnnkit.GRUCell(3, 4)(torch.randn(2, 3, dtype=torch.float64))
