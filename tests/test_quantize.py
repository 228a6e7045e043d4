"""rnnkit.quantize_dynamic: int8 weight matrices (one scale per row) for every recurrent
module, torch's dynamic int8 Linear for the heads; the same call contract, outputs
within the int8 rounding of the weights."""

import io

import pytest
import torch

import rnnkit
from rnnkit.models import LanguageModel, SequenceClassifier
from configurations import CONFIGURATIONS

#: every layer configuration, and the cell modules: (maker, input shape)
MODULES = {
    **{name: (lambda c=c: c.make(6, 16, num_layers=2), (7, 3, 6))
       for name, c in CONFIGURATIONS.items()},
    "lstm-cell": (lambda: rnnkit.LSTMCell(6, 8), (3, 6)),
    "gru-cell-layer-norm": (lambda: rnnkit.GRUCell(6, 8, layer_norm=True), (3, 6)),
    "min-gru-cell": (lambda: rnnkit.MinGRUCell(6, 8), (3, 6)),
}


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(MODULES))
def test_every_recurrent_module_quantizes(name):
    make, shape = MODULES[name]
    module = make().eval()
    x = torch.randn(*shape)
    small = rnnkit.quantize_dynamic(module)
    assert module.weight_ih_l0.dtype == torch.float32 if hasattr(module, "weight_ih_l0") \
        else True  # the original is left as it was
    matrices = [k for k, v in small.state_dict().items()
                if v.dim() == 2 and not k.endswith("_scale")]
    assert matrices and all(small.state_dict()[k].dtype == torch.int8 for k in matrices)
    # each weight is within half a step of its row's int8 grid (below); the output moves
    # by a fraction of a per cent, by a few per cent through a layer norm (which
    # measured here amplifies the rounding about tenfold)
    expected, got = _first(module(x)), _first(small(x))
    layer_norm = CONFIGURATIONS.get(name, (None, {}))[1].get("layer_norm", False)
    assert 0 < (got - expected).norm() < (0.1 if layer_norm else 0.02) * expected.norm()
    for name_, w in module.named_parameters():
        if w.dim() == 2:
            back = small.dequantized()[name_]
            step = w.abs().amax(1, keepdim=True) / 127
            assert ((back - w).abs() <= step / 2 + 1e-7).all()


def test_the_call_contract_is_the_layers():
    layer = rnnkit.LSTM(4, 5, batch_first=True).eval()
    small = rnnkit.quantize_dynamic(layer)
    x = torch.randn(2, 6, 4)
    out, (h, c), states = small(x, lengths=[6, 3], return_states=True, backend="fused")
    assert out.shape == (2, 6, 5) and states.c.shape == (1, 2, 6, 5)
    assert small.hidden_size == 5 and small.cell.has_cell_state


def test_a_language_model_is_smaller_and_runs():
    model = LanguageModel(vocab_size=60, hidden_size=64, num_layers=2).eval()
    small = rnnkit.quantize_dynamic(model)

    def size(m):
        buffer = io.BytesIO()
        torch.save(m.state_dict(), buffer)
        return buffer.tell()

    assert size(small) < size(model) * 0.4  # the embedding stays float
    ids = torch.randint(0, 60, (2, 20))
    logits, _ = small(ids)
    assert (logits - model(ids)[0]).abs().max() < 0.05
    assert isinstance(small.head, torch.ao.nn.quantized.dynamic.Linear)  # int8 GEMMs
    classifier = rnnkit.quantize_dynamic(SequenceClassifier(num_classes=3, vocab_size=20,
                                                            cell="gru"))
    assert classifier(torch.randint(0, 20, (2, 5)), [5, 2]).shape == (2, 3)


def test_bad_input():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        rnnkit.quantize_dynamic("model")
    with pytest.raises(TypeError, match="rnnkit recurrent layer"):
        rnnkit.quantize.QuantizedRecurrent(torch.nn.LSTM(2, 3))


def test_a_quantized_language_model_generates():
    model = LanguageModel(vocab_size=30, hidden_size=16).eval()
    small = rnnkit.quantize_dynamic(model)
    assert len(small.generate([1, 2, 3], 5, seed=0)) == 5


def test_parametrized_weights_are_refused_clearly():
    layer = torch.nn.utils.parametrizations.weight_norm(rnnkit.LSTM(3, 4), "weight_hh_l0")
    with pytest.raises(ValueError, match="remove_parametrizations"):
        rnnkit.quantize_dynamic(layer)


# -- torch's own quantize_dynamic, given rnnkit's mapping ----------------------------------

#: rnnkit modules of torch.nn's configurations and their torch.nn twins
TWINS = {
    "lstm-2-layers-bidirectional": (
        lambda: rnnkit.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True),
        torch.nn.LSTM, (3, 7, 6)),
    "gru": (lambda: rnnkit.GRU(6, 8), torch.nn.GRU, (7, 3, 6)),
    "lstm-cell": (lambda: rnnkit.LSTMCell(6, 8), torch.nn.LSTMCell, (3, 6)),
    "gru-cell": (lambda: rnnkit.GRUCell(6, 8), torch.nn.GRUCell, (3, 6)),
    "rnn-cell-relu": (lambda: rnnkit.RNNCell(6, 8, nonlinearity="relu"), torch.nn.RNNCell,
                      (3, 6)),
}


def _torch_quantize(model, **kwargs):
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, **kwargs)


@pytest.mark.parametrize("name", list(TWINS))
def test_torchs_quantize_dynamic_makes_torchs_quantized_modules_of_torch_nn_configurations(name):
    from rnnkit.quantize import torch_mapping, torch_qconfig_spec

    make, twin_class, shape = TWINS[name]
    torch.manual_seed(0)
    module = make().eval()
    wrapper = torch.nn.Sequential(module)
    quantized = _torch_quantize(wrapper, qconfig_spec=torch_qconfig_spec(),
                                mapping=torch_mapping())[0]
    assert type(quantized).__name__ == twin_class.__name__
    assert type(quantized).__module__.startswith("torch.ao.nn.quantized.dynamic")
    # the same as torch's own conversion of torch.nn's module with the same weights
    twin = twin_class(**{k: getattr(module, k) for k in ("input_size", "hidden_size")},
                      **({"num_layers": module.num_layers, "batch_first": module.batch_first,
                          "bidirectional": module.bidirectional}
                         if hasattr(module, "num_layers") else {}),
                      **({"nonlinearity": "relu"} if twin_class is torch.nn.RNNCell else {}))
    twin.load_state_dict(module.state_dict())
    expected = _torch_quantize(torch.nn.Sequential(twin.eval()),
                               qconfig_spec={twin_class})[0]
    x = torch.randn(*shape)
    torch.testing.assert_close(_first(quantized(x)), _first(expected(x)), rtol=0, atol=0)
    assert (_first(quantized(x)) - _first(module(x))).abs().max() < 0.05


@pytest.mark.parametrize("name", ["lstm-layer-norm", "lstm-proj", "rnn", "mingru",
                                  "gru-zoneout"])
def test_torchs_quantize_dynamic_keeps_rnnkits_own_call_for_everything_else(name):
    from rnnkit.quantize import QuantizedRecurrent, torch_mapping, torch_qconfig_spec

    make = {"lstm-layer-norm": lambda: rnnkit.LSTM(6, 8, layer_norm=True),
            # torch's quantized LSTM cannot run a projection
            "lstm-proj": lambda: rnnkit.LSTM(6, 8, proj_size=4),
            "rnn": lambda: rnnkit.RNN(6, 8), "mingru": lambda: rnnkit.MinGRU(6, 8),
            "gru-zoneout": lambda: rnnkit.GRU(6, 8, zoneout=0.1)}[name]
    torch.manual_seed(0)
    model = torch.nn.Sequential(make().eval())
    converted = _torch_quantize(model, qconfig_spec=torch_qconfig_spec(),
                                mapping=torch_mapping())
    assert isinstance(converted[0], QuantizedRecurrent)
    x = torch.randn(7, 3, 6)
    torch.testing.assert_close(converted[0](x, lengths=[7, 5, 2])[0],
                               rnnkit.quantize_dynamic(model)[0](x, lengths=[7, 5, 2])[0])
    # without rnnkit's mapping torch's quantize_dynamic leaves rnnkit's layers as they are
    untouched = _torch_quantize(model, qconfig_spec={torch.nn.LSTM, torch.nn.GRU})
    assert type(untouched[0]) is type(model[0])
