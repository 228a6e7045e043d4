"""ONNX export: every model and cell runs in onnxruntime as in torch, standard cells
become ONNX's own recurrent operators, variants unroll over a fixed time axis."""

import warnings

import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install onnx)")
pytest.importorskip("onnxruntime",
                    reason="checking ONNX export needs onnxruntime (pip install onnxruntime)")

import onnx  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.export import check_onnx, export_onnx, onnx_operators  # noqa: E402
from rnnkit.models import (Forecaster, LanguageModel, Seq2Seq, SequenceClassifier,  # noqa: E402
                           SequenceTagger)

torch.set_num_threads(1)

B, T, V = 3, 7, 20
ATOL = 1e-4
CELLS = ["rnn", "lstm", "gru"]
ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
RECURRENT_OPS = {"RNN", "LSTM", "GRU"}
SMALL = dict(hidden_size=8)


def _tokens(batch=B, length=T):
    return torch.randint(0, V, (batch, length))


def _export_and_check(model, inputs, tmp_path, name="model.onnx"):
    """Export without warnings, check against torch; (max diff, op types, file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a native export fixes nothing: no warning
        path = export_onnx(model, tmp_path / name, inputs)
    diff = check_onnx(path, model, inputs, atol=ATOL)
    assert diff <= ATOL
    return diff, onnx_operators(path), path


def _input_dims(path, index=0):
    """The declared dims of a graph input: ints where fixed, names where dynamic."""
    dims = onnx.load(str(path)).graph.input[index].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# -- every model type with every cell: native operators, dynamic batch and time ----------


@pytest.mark.parametrize("cell", CELLS)
def test_classifier(cell, tmp_path):
    model = SequenceClassifier(num_classes=3, vocab_size=V, embedding_size=6, cell=cell,
                               num_layers=2, bidirectional=cell == "lstm", **SMALL)
    _, ops, path = _export_and_check(model, (_tokens(),), tmp_path)
    assert ONNX_OP[cell] in ops
    assert all(isinstance(d, str) for d in _input_dims(path))  # batch and time free


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_classifier_poolings_on_features(pooling, tmp_path):
    model = SequenceClassifier(num_classes=2, input_size=5, pooling=pooling, cell="gru",
                               bidirectional=True, **SMALL)
    _, ops, _ = _export_and_check(model, (torch.randn(B, T, 5),), tmp_path)
    assert "GRU" in ops


@pytest.mark.parametrize("cell", CELLS)
def test_tagger(cell, tmp_path):
    model = SequenceTagger(num_tags=4, vocab_size=V, embedding_size=6, cell=cell,
                           bidirectional=True, num_layers=1 + (cell == "gru"), **SMALL)
    _, ops, _ = _export_and_check(model, (_tokens(),), tmp_path)
    assert ONNX_OP[cell] in ops


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_with_state_out_and_in(cell, tmp_path):
    model = LanguageModel(vocab_size=V, embedding_size=6, cell=cell, num_layers=2, **SMALL)
    tokens = _tokens()
    _, ops, path = _export_and_check(model, (tokens,), tmp_path)
    assert ONNX_OP[cell] in ops
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names == ["logits", "h_n"] + (["c_n"] if cell == "lstm" else [])
    # with the state as an input too: a graph that continues a stream
    with torch.no_grad():
        _, state = model(tokens)
    _, ops, path = _export_and_check(model, (_tokens(length=1), state), tmp_path, "step.onnx")
    assert ONNX_OP[cell] in ops
    assert [i.name for i in onnx.load(str(path)).graph.input] == \
        ["tokens", "h_0"] + (["c_0"] if cell == "lstm" else [])


@pytest.mark.parametrize("cell,mode,skip_lags,window_norm", [
    ("rnn", "direct", 0, False), ("lstm", "autoregressive", 0, False), ("gru", "direct", 0, True),
    ("gru", "autoregressive", 0, False), ("lstm", "direct", 3, False),
    ("lstm", "direct", 3, True)])
def test_forecaster(cell, mode, skip_lags, window_norm, tmp_path):
    model = Forecaster(input_size=3, horizon=4, mode=mode, cell=cell, skip_lags=skip_lags,
                       relative=bool(skip_lags), window_norm=window_norm, **SMALL)
    model.fit_scaler(torch.randn(50, 3) * 2 + 1)
    _, ops, path = _export_and_check(model, (torch.randn(B, T, 3),), tmp_path)
    assert ONNX_OP[cell] in ops
    assert all(isinstance(d, str) for d in _input_dims(path)[:2])


@pytest.mark.parametrize("cell,attention", [("rnn", None), ("lstm", "bahdanau"),
                                            ("gru", "luong")])
def test_seq2seq_teacher_forced(cell, attention, tmp_path):
    model = Seq2Seq(src_vocab_size=V, tgt_vocab_size=V + 2, embedding_size=6,
                    attention=attention, cell=cell, bidirectional=cell == "lstm",
                    num_layers=1 + (cell == "gru"), **SMALL)
    src, tgt_in = _tokens(), torch.randint(0, V + 2, (B, 5))
    _, ops, path = _export_and_check(model, (src, tgt_in), tmp_path)
    assert ONNX_OP[cell] in ops
    assert all(isinstance(d, str) for d in _input_dims(path, 0))  # src: batch, time free
    assert _input_dims(path, 1)[1] == 5  # the decoder's loop unrolls over the target


# -- bare layers ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(4, 8, nonlinearity="relu", num_layers=2),
    lambda: rnnkit.RNN(4, 8, batch_first=True, bidirectional=True),
    lambda: rnnkit.GRU(4, 8, num_layers=2, bidirectional=True),
    lambda: rnnkit.LSTM(4, 8, batch_first=True, num_layers=2, bidirectional=True),
], ids=["rnn_relu", "rnn_bi", "gru", "lstm"])
def test_layers_native(make, tmp_path):
    layer = make()
    x = torch.randn(B, T, 4) if layer.batch_first else torch.randn(T, B, 4)
    _, ops, path = _export_and_check(layer, (x,), tmp_path)
    assert ops & RECURRENT_OPS == {ONNX_OP[type(layer).__name__.lower()]}
    assert all(isinstance(d, str) for d in _input_dims(path)[:2])


def test_layer_with_initial_state(tmp_path):
    layer = rnnkit.LSTM(4, 8, num_layers=2)
    hx = (torch.randn(2, B, 8), torch.randn(2, B, 8))
    _, ops, _ = _export_and_check(layer, (torch.randn(T, B, 4), hx), tmp_path)
    assert "LSTM" in ops


def test_lstm_proj_size_unrolls(tmp_path):
    """ONNX's LSTM has no projection: the layer unrolls, and still matches."""
    layer = rnnkit.LSTM(4, 8, proj_size=3, batch_first=True)
    x = torch.randn(B, T, 4)
    with pytest.warns(UserWarning, match="time dimension is fixed"):
        path = export_onnx(layer, tmp_path / "proj.onnx", (x,))
    assert check_onnx(path, layer, (x,)) <= ATOL
    assert not onnx_operators(path) & RECURRENT_OPS
    assert _input_dims(path) == ["batch", T, 4]


# -- variants: the unrolled reference loop -------------------------------------------


@pytest.mark.parametrize("cell,options", [
    ("lstm", dict(layer_norm=True)),
    ("gru", dict(layer_norm=True)),
    ("lstm", dict(peephole=True)),
    ("gru", dict(reset_after=False)),
    ("rnn", dict(nonlinearity="sigmoid")),
    ("lstm", dict(zoneout=0.2)),
])
def test_variants_unroll_and_match(cell, options, tmp_path):
    model = SequenceTagger(num_tags=3, vocab_size=V, embedding_size=6, cell=cell,
                           bidirectional=True, **SMALL, **options)
    tokens = _tokens()
    with pytest.warns(UserWarning, match="time dimension is fixed"):
        path = export_onnx(model, tmp_path / "variant.onnx", (tokens,))
    assert check_onnx(path, model, (tokens,)) <= ATOL
    ops = onnx_operators(path)
    assert not ops & RECURRENT_OPS
    if options.get("layer_norm"):
        assert "LayerNormalization" in ops
    assert _input_dims(path) == ["batch", T]  # the batch stays free


def test_export_restores_backend_and_mode(tmp_path):
    model = SequenceClassifier(num_classes=2, vocab_size=V, cell="lstm", backend="fused",
                               **SMALL)
    variant = SequenceClassifier(num_classes=2, vocab_size=V, cell="gru", layer_norm=True,
                                 **SMALL)
    for m, op in ((model, "LSTM"), (variant, None)):
        m.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export_onnx(m, tmp_path / "m.onnx", (_tokens(),))
        assert m.training
        assert m.rnn.backend == ("fused" if m is model else "auto")
        # a user's backend="fused" still exports to ONNX's LSTM: export picks the engine
        assert onnx_operators(path) & RECURRENT_OPS == ({op} if op else set())


def test_dynamic_false_fixes_every_axis(tmp_path):
    model = SequenceTagger(num_tags=3, vocab_size=V, cell="gru", **SMALL)
    path = export_onnx(model, tmp_path / "fixed.onnx", (_tokens(),), dynamic=False)
    assert _input_dims(path) == [B, T]
    assert check_onnx(path, model, (_tokens(),)) <= ATOL  # checks the example only


# -- errors --------------------------------------------------------------------------


def test_check_onnx_catches_a_mismatch(tmp_path):
    model = SequenceTagger(num_tags=3, vocab_size=V, cell="lstm", **SMALL)
    tokens = _tokens()
    path = export_onnx(model, tmp_path / "m.onnx", (tokens,))
    with torch.no_grad():
        model.head[1].bias.add_(1.0)
    with pytest.raises(ValueError, match="logits.*differs"):
        check_onnx(path, model, (tokens,))


def test_bad_arguments(tmp_path):
    model = SequenceTagger(num_tags=3, vocab_size=V, cell="gru", **SMALL)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", (_tokens(),), opset=99)
    with pytest.raises(TypeError, match="model must be one of"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx", (torch.randn(1, 2),))
    with pytest.raises(ValueError, match=r"example_inputs for Seq2Seq must be \(src, tgt_in\)"):
        export_onnx(Seq2Seq(), tmp_path / "m.onnx", (_tokens(),))
    ln = SequenceTagger(num_tags=3, vocab_size=V, cell="gru", layer_norm=True, **SMALL)
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(ln, tmp_path / "m.onnx", (_tokens(),), opset=16)


def test_a_bare_layer_of_a_cell_with_a_cell_state_exports_c_n(tmp_path):
    """Every layer whose cell carries c (rnnkit.Recurrent over LSTMStep, a user's CIFG)
    names c_n among the outputs, as rnnkit.LSTM does, and matches onnxruntime."""
    from rnnkit.bench import CIFG

    for cell in (rnnkit.cells.LSTMStep(), CIFG()):
        layer = rnnkit.Recurrent(cell, 4, 8)
        x = torch.randn(T, B, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a user's cell unrolls: the time axis is fixed
            path = export_onnx(layer, tmp_path / "cell.onnx", (x,))
        assert [o.name for o in onnx.load(path).graph.output] == ["output", "h_n", "c_n"]
        assert check_onnx(path, layer, (x,)) <= ATOL
