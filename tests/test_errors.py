"""Bad arguments raise ValueError / TypeError naming the argument, what was expected
and what came."""

import pytest
import torch

import rnnkit


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match=r"nonlinearity.*'tanh'.*'softplus'"):
        rnnkit.RNN(3, 4, nonlinearity="softplus")
    with pytest.raises(ValueError, match=r"nonlinearity.*'gelu'"):
        rnnkit.RNNCell(3, 4, nonlinearity="gelu")


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend.*'auto'.*'cudnn'"):
        rnnkit.LSTM(3, 4, backend="cudnn")
    m = rnnkit.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"backend.*'fast'"):
        m(torch.randn(2, 1, 3), backend="fast")


def test_native_backend_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"backend='native'.*sigmoid"):
        rnnkit.RNN(3, 4, nonlinearity="sigmoid")(torch.randn(2, 1, 3), backend="native")
    with pytest.raises(ValueError, match=r"backend='native'.*return_states"):
        rnnkit.GRU(3, 4)(torch.randn(2, 1, 3), backend="native", return_states=True)


def test_reset_after_must_be_bool():
    with pytest.raises(TypeError, match=r"reset_after.*'yes'"):
        rnnkit.GRU(3, 4, reset_after="yes")


@pytest.mark.parametrize("shape", [(3,), (2, 1, 1, 3)])
def test_wrong_input_rank(shape):
    with pytest.raises(ValueError, match=r"input must be 3-D.*2-D.*got %d-D" % len(shape)):
        rnnkit.LSTM(3, 4)(torch.randn(shape))


def test_wrong_input_size():
    with pytest.raises(ValueError, match=r"input.*3 features.*input_size.*\(2, 1, 5\)"):
        rnnkit.GRU(3, 4)(torch.randn(2, 1, 5))


def test_input_not_a_tensor():
    with pytest.raises(TypeError, match=r"input must be a Tensor.*list"):
        rnnkit.RNN(3, 4)([[1.0, 2.0, 3.0]])


def test_empty_sequence():
    with pytest.raises(ValueError, match=r"at least one time step"):
        rnnkit.RNN(3, 4)(torch.randn(0, 2, 3))


def test_dtype_mismatch():
    with pytest.raises(TypeError, match=r"input dtype torch.float64.*torch.float32"):
        rnnkit.RNN(3, 4)(torch.randn(2, 1, 3, dtype=torch.float64))


def test_state_shape_mismatch():
    m = rnnkit.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\).*got \(1, 2, 4\)"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(2, 2, 4\).*got \(2, 2, 5\)"):
        m(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 5)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\).*Tensor"):
        m(x, torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match=r"hx must be a tensor h_0.*tuple"):
        rnnkit.GRU(3, 4)(x, (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 2, 3\).*\(1, 2, 4\)"):
        rnnkit.LSTM(3, 4, proj_size=3)(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))


def test_state_dtype_mismatch():
    with pytest.raises(TypeError, match=r"h_0 must match the input's dtype.*float64"):
        rnnkit.GRU(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


@pytest.mark.parametrize("lengths, pattern", [
    ([5, 6], r"lengths must lie in \[1, 5\].*\[5, 6\]"),
    ([0, 3], r"lengths must lie in \[1, 5\].*\[0, 3\]"),
    ([-1, 3], r"lengths must lie in \[1, 5\]"),
    ([3], r"lengths must have shape \(2,\).*\(1,\)"),
    (torch.tensor([2.0, 3.0]), r"lengths must hold integers.*float32"),
    ("23", r"lengths must be a tensor or a list of ints"),
])
def test_bad_lengths(lengths, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        rnnkit.LSTM(3, 4)(torch.randn(5, 2, 3), lengths=lengths)


def test_lengths_with_packed_input():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 2])
    with pytest.raises(ValueError, match=r"lengths must be None for PackedSequence"):
        rnnkit.GRU(3, 4)(packed, lengths=[5, 2])


def test_cell_errors():
    cell = rnnkit.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input must be 2-D.*1-D.*\(2, 2, 3\)"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=r"3 features.*\(2, 5\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"hx's c must have shape \(2, 4\).*\(2, 3\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(2, 3)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c\)"):
        cell(torch.randn(2, 3), torch.zeros(2, 4))


def test_proj_size_only_for_lstm():
    with pytest.raises(TypeError):
        rnnkit.GRU(3, 4, proj_size=2)


def test_cell_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*'fused'"):
        rnnkit.GRUCell(3, 4, backend="fused")
    with pytest.raises(ValueError, match=r"backend='native' cannot run .*layer_norm=True"):
        rnnkit.LSTMCell(3, 4, layer_norm=True, backend="native")


def test_device_mismatch_names_both_devices():
    layer = rnnkit.LSTM(3, 4).to("meta")  # any device other than the input's
    with pytest.raises(ValueError, match=r"input is on cpu but the layer's weights are on meta"):
        layer(torch.randn(2, 1, 3))
    cell = rnnkit.GRUCell(3, 4).to("meta")
    with pytest.raises(ValueError, match=r"input is on cpu but the cell's weights are on meta"):
        cell(torch.randn(2, 3))
