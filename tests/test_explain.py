"""The explorer page (``rnnkit explain``): the data behind it against direct computation,
the page for every task and several cells, bad input, and the page in a real browser."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import zlib

import pytest
import torch
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.diagnostics import gate_activations
from rnnkit.diagnostics.inside import (input_gradient_norms, saturation_by_unit,
                                       unit_selectivity, unit_trajectories)
from rnnkit.diagnostics.page import MAX_TOKENS, quantise, write_page
from rnnkit.train import api
from rnnkit.train.checkpoint import save_checkpoint
from rnnkit.train.explain import explain
from rnnkit.train.tasks import TASKS
from rnnkit.train.trainer import Trainer
import test_custom_cell

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the data behind the page ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True),
    lambda: rnnkit.LSTM(3, 5, layer_norm=True, peephole=True),
    lambda: rnnkit.GRU(3, 5, reset_after=False, batch_first=True),
    lambda: rnnkit.RNN(3, 5, num_layers=2),
    lambda: rnnkit.MinLSTM(3, 5, batch_first=True),
], ids=["lstm-2-bi", "lstm-ln-peephole", "gru-cho", "rnn-2", "minlstm"])
def test_trajectories_are_the_layers_own_states_and_gates(make):
    layer = make()
    x = torch.randn(2, 7, 3) if layer.batch_first else torch.randn(7, 2, 3)
    traj = unit_trajectories(layer, x)
    _, _, states = layer.eval()(x, return_states=True)
    time_first = (lambda s: s.transpose(1, 2)) if layer.batch_first else (lambda s: s)
    torch.testing.assert_close(traj["h"], time_first(states.h))
    if states.c is None:
        assert "c" not in traj
    else:  # the c_t shown is return_states' c_t
        torch.testing.assert_close(traj["c"], time_first(states.c))
    gates = layer.cell.gate_names
    if gates:
        acts = gate_activations(layer, x)
        assert set(acts) <= set(traj)
        for name, value in acts.items():
            torch.testing.assert_close(traj[name], value)
    else:
        assert set(traj) <= {"h", "c"}


def test_lstm_gates_recomputed_by_hand():
    """An independent check of the gates on the page: i, f, g, o from the weights."""
    lstm = rnnkit.LSTM(2, 3)
    x = torch.randn(4, 1, 2)
    traj = unit_trajectories(lstm, x)
    h, c = torch.zeros(3), torch.zeros(3)
    for t in range(4):
        P = lstm.weight_ih_l0 @ x[t, 0] + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
        i, f, g, o = P.detach().chunk(4)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        for name, value in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c), ("h", h)):
            torch.testing.assert_close(traj[name][0, t, 0], value, atol=1e-6, rtol=1e-5)


def test_gru_gates_recomputed_by_hand():
    gru = rnnkit.GRU(2, 3)
    x = torch.randn(4, 1, 2)
    traj = unit_trajectories(gru, x)
    h = torch.zeros(3)
    for t in range(4):
        gi = (gru.weight_ih_l0 @ x[t, 0] + gru.bias_ih_l0).detach()
        gh = (gru.weight_hh_l0 @ h + gru.bias_hh_l0).detach()
        r = (gi[:3] + gh[:3]).sigmoid()
        z = (gi[3:6] + gh[3:6]).sigmoid()
        n = (gi[6:] + r * gh[6:]).tanh()
        h = (1 - z) * n + z * h
        for name, value in (("r", r), ("z", z), ("n", n), ("h", h)):
            torch.testing.assert_close(traj[name][0, t, 0], value, atol=1e-6, rtol=1e-5)


def test_a_planted_unit_ranks_first_for_its_feature():
    g = torch.Generator().manual_seed(0)
    T, U = 300, 20
    quotes = (torch.rand(T, generator=g) < 0.3).double()
    values = torch.randn(T, U, generator=g, dtype=torch.float64)
    values[:, 13] = 0.8 * quotes + 0.1 * torch.randn(T, generator=g, dtype=torch.float64)
    values[:, 4] = 5.0  # a constant unit: no correlation, not an error
    r = unit_selectivity(values, {"inside quotes": quotes})["inside quotes"]
    assert int(r.abs().argmax()) == 13 and r[13] > 0.9
    assert r[4] == 0
    # Pearson's r, as numpy computes it
    import numpy as np
    expected = np.corrcoef(values[:, 7].numpy(), quotes.numpy())[0, 1]
    assert float(r[7]) == pytest.approx(expected, abs=1e-12)


def test_selectivity_checks_its_shapes():
    with pytest.raises(ValueError, match="values must be a \\(T, U\\)"):
        unit_selectivity(torch.zeros(3), {})
    with pytest.raises(ValueError, match="features\\['x'\\] must have shape \\(4,\\)"):
        unit_selectivity(torch.zeros(4, 2), {"x": torch.zeros(5)})


def test_saturation_by_unit_counts_the_corners():
    gate = torch.tensor([[0.01, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.5]])
    left, right = saturation_by_unit(gate)
    assert left.tolist() == [0.5, 0.0] and right.tolist() == [0.25, 0.25]
    with pytest.raises(ValueError, match="threshold"):
        saturation_by_unit(gate, threshold=0.6)


def test_input_gradient_norms_against_the_jacobian():
    lstm = rnnkit.LSTM(3, 4, batch_first=True).double()
    head = torch.nn.Linear(4, 2).double()
    x = torch.randn(1, 6, 3, dtype=torch.float64)
    positions = [1, 5]

    def output(x):
        out, _ = lstm(x)
        return head(out[0, positions, :]).sum(-1)  # (2,)
    norms = input_gradient_norms(output, x, 2)
    jac = torch.autograd.functional.jacobian(output, x)  # (2, 1, 6, 3)
    torch.testing.assert_close(norms, jac[:, 0].norm(dim=-1))
    assert (norms[0, 2:] == 0).all()  # a unidirectional layer: later steps do not count
    with pytest.raises(ValueError, match="must return \\(3,\\)"):
        input_gradient_norms(output, x, 3)


def test_quantise_round_trip():
    values = torch.randn(5, 40, dtype=torch.float64) * 7
    data, lo, hi = quantise(values)
    q = torch.frombuffer(bytearray(data), dtype=torch.uint8).double().reshape(5, 40)
    back = lo + q / 255 * (hi - lo)
    assert (back - values).abs().max() <= (hi - lo) / 510 + 1e-12


def _read_page(path):
    """(meta, activation bytes) as the page's script reads them."""
    page = path.read_text(encoding="utf-8")
    meta = re.search(r'<script type="application/json" id="meta">(.*?)</script>', page, re.S)
    blob = re.search(r'<script type="text/plain" id="activations">(.*?)</script>', page, re.S)
    return json.loads(meta.group(1)), zlib.decompress(base64.b64decode(blob.group(1)))


def test_page_holds_the_activations_it_was_given(tmp_path):
    values = {"h": torch.rand(3, 4) * 2 - 1, "f": torch.rand(3, 4)}
    tokens = ["a", "</script>", "<!--", "\n"]  # nothing in a token ends the script early
    page = write_page(tmp_path / "p.html", title="t", tokens=tokens,
                      trajectories=[{"name": "l0", "values": values}], selectivity={},
                      predictions=[""] * 4, contributions=[])
    meta, blob = _read_page(page)
    assert meta["tokens"] == tokens
    for name, v in values.items():
        q = meta["layers"][0]["quantities"][name]
        data, lo, hi = quantise(v)
        assert blob[q["offset"]:q["offset"] + 12] == data and (q["lo"], q["hi"]) == (lo, hi)
    assert meta["layers"][0]["quantities"]["h"]["signed"] and \
        not meta["layers"][0]["quantities"]["f"]["signed"]


def test_page_limits(tmp_path):
    kwargs = dict(title="t", trajectories=[], selectivity={}, contributions=[])
    with pytest.raises(ValueError, match="at least one token"):
        write_page(tmp_path / "p.html", tokens=[], predictions=[], **kwargs)
    with pytest.raises(ValueError, match=f"more than the {MAX_TOKENS:,}"):
        write_page(tmp_path / "p.html", tokens=["a"] * (MAX_TOKENS + 1),
                   predictions=[""] * (MAX_TOKENS + 1), **kwargs)
    assert not (tmp_path / "p.html").exists()


# -- pages of checkpoints ------------------------------------------------------------------

TINY = {"hidden_size": 6, "batch_size": 4, "progress": False, "max_steps": 1}
TINY_TASK = {"lm": {"seq_len": 20}, "adding": {"seq_len": 12}, "copy": {"seq_len": 4},
             "forecast": {"seq_len": 12, "horizon": 3}}
#: (name, task, settings beyond TINY): every task once, and cells beyond the LSTM
CHECKPOINTS = [(task, task, {}) for task in sorted(TASKS)] + [
    ("digits-pixels", "digits", {"digits_mode": "permuted"}),
    ("lm-gru-layer-norm", "lm", {"cell": "gru", "layer_options": {"layer_norm": True}}),
    ("adding-mingru", "adding", {"cell": "mingru"}),
    ("adding-rnn-2", "adding", {"cell": "rnn", "num_layers": 2}),
    ("classify-attention", "classify", {"pooling": "attention"}),
    ("adding-users-cell", "adding", {"cell": "explain_cells_for_test:CIFG"}),
]
#: a user's own cell, through the cell extension point: the CIFG module that the CLI's
#: test of a user's cell writes
USERS_CELL = test_custom_cell.MODULE


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An untrained checkpoint of each entry of CHECKPOINTS, as the trainer writes it."""
    folder = tmp_path_factory.mktemp("explain")
    (folder / "explain_cells_for_test.py").write_text(USERS_CELL)
    sys.path.insert(0, str(folder))
    paths = {}
    torch.manual_seed(0)
    for name, task, extra in CHECKPOINTS:
        options, config = api.settings(task, {**TINY, **TINY_TASK.get(task, {}), **extra})
        trainer = Trainer(TASKS[task](options), config, folder / name)
        paths[name] = save_checkpoint(trainer._payload(), folder / name / "best.pt")
    yield paths
    sys.path.remove(str(folder))
    sys.modules.pop("explain_cells_for_test", None)


def test_every_task_has_a_checkpoint_here():
    assert {task for _, task, _ in CHECKPOINTS} == set(TASKS)


@pytest.mark.parametrize("name", [name for name, _, _ in CHECKPOINTS])
def test_page_of_every_task(name, checkpoints, tmp_path):
    torch.manual_seed(0)
    trust = "users-cell" in name  # a user's cell is rebuilt only when trusted
    result = explain(checkpoints[name], tmp_path / "page.html", trust_code=trust)
    meta, blob = _read_page(result["page"])
    T = len(meta["tokens"])
    assert T == result["steps"] > 0 and len(meta["predictions"]) == T
    model, payload = api.load(checkpoints[name], trust_code=trust)
    layer = model.encoder if hasattr(model, "encoder") else model.rnn
    D = 2 if layer.bidirectional else 1
    assert [entry["name"] for entry in meta["layers"]] == [
        f"l{k // D}" + "_reverse" * (k % D) for k in range(layer.num_layers * D)]
    quantities = set(meta["layers"][0]["quantities"])
    assert "h" in quantities and ("c" in quantities) == layer.cell.has_cell_state
    assert set(layer.cell.gate_names) <= quantities
    size = sum(q["units"] for entry in meta["layers"] for q in entry["quantities"].values()) * T
    assert len(blob) == size  # one byte per value
    for entry in meta["contributions"]:
        assert len(entry["values"]) == T and all(v >= 0 for v in entry["values"])
    assert meta["contributions"], "every model's page shows what its inputs contributed"
    # ‖∂L/∂h_t‖ over t, as gradflow measures it, wherever a replay can (not both ways)
    page = result["page"].read_text(encoding="utf-8")
    assert ("‖∂L/∂h_t‖ over t, for the model" in page) != layer.bidirectional
    # each layer's h and c are ranked against every feature
    assert set(meta["selectivity"]) == {entry["name"] for entry in meta["layers"]}
    if name == "lm":  # the validation text's own ids, not the text decoded and read again
        ids = api._task(payload).parts["validation"][:2000]
        assert T == len(ids)
        vocab = rnnkit.data.Vocabulary.from_dict(payload["task"]["vocab"])
        assert meta["tokens"] == [vocab.tokens[i] for i in ids.tolist()]
    if name == "copy":  # predicted and true symbols are named alike
        shown = {p.split()[1] for p in meta["predictions"]} | {
            p.split("true: ")[1] for p in meta["predictions"]}
        assert shown <= {"_", ":", *map(str, range(1, 9))}


def test_language_model_page_from_a_text(checkpoints, tmp_path):
    text = 'say "hi" (twice)\nok'
    result = explain(checkpoints["lm"], tmp_path / "p.html", text=text + "€")
    meta, blob = _read_page(result["page"])
    assert "".join(meta["tokens"]) == text + "€"
    # the character the vocabulary lacks is shown, marked and named, not dropped
    assert meta["unknown"] == [len(text)]
    assert any("unknown" in note and "€" in note for note in meta["notes"])
    # the units' rankings use the token features
    features = meta["selectivity"]["l0"]["h"]
    assert {"inside quotes", "inside brackets", "position in line"} <= set(features)
    # the c_t of the page is return_states' c_t of the model's own embedding of the text
    model, payload = api.load(checkpoints["lm"])
    vocab = rnnkit.data.Vocabulary.from_dict(payload["task"]["vocab"])
    ids = torch.tensor([vocab.lookup(list(text + "€"))])
    _, _, states = model.eval().rnn(model.embedding(ids), return_states=True)
    q = meta["layers"][0]["quantities"]["c"]
    U, T = q["units"], len(meta["tokens"])
    page_c = torch.tensor(list(blob[q["offset"]:q["offset"] + U * T])).double().reshape(U, T)
    page_c = q["lo"] + page_c / 255 * (q["hi"] - q["lo"])
    torch.testing.assert_close(page_c, states.c[0, 0].T.double(),
                               atol=(q["hi"] - q["lo"]) / 510 + 1e-6, rtol=0)


def test_bad_input(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError):
        explain(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="empty"):
        explain(checkpoints["lm"], tmp_path / "p.html", text="")
    with pytest.raises(ValueError, match=f"more than the {MAX_TOKENS:,} a page shows"):
        explain(checkpoints["lm"], tmp_path / "p.html", text="a" * (MAX_TOKENS + 1))
    with pytest.raises(ValueError, match="reads no text"):
        explain(checkpoints["adding"], tmp_path / "p.html", text="hello")
    with pytest.raises(ValueError, match=r"index must be an int in \[0, "):
        explain(checkpoints["digits"], tmp_path / "p.html", index=10 ** 6)
    with pytest.raises(ValueError, match="at most one of"):
        explain(checkpoints["lm"], tmp_path / "p.html", text="a", index=0)
    assert not (tmp_path / "p.html").exists()


def test_cli_explain(checkpoints, tmp_path):
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["explain", str(checkpoints["tag"]), "--text",
                                 "the dog runs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    meta, _ = _read_page(out)
    assert meta["tokens"] == ["the", "dog", "runs"]
    assert all(p.startswith("tag: ") for p in meta["predictions"])
    # the tagger's units are ranked against each tag it gives
    predicted = {p.split()[1] for p in meta["predictions"]}
    assert {f"tag {t}" for t in predicted} <= set(meta["selectivity"]["l0"]["h"])
    result = runner.invoke(app, ["explain", str(tmp_path / "nothing.pt")])
    assert result.exit_code == 2 and "not found" in result.output
    result = runner.invoke(app, ["explain", str(checkpoints["tag"]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"could not write {tmp_path}" in result.output
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # refused, not read: it would never end
    result = runner.invoke(app, ["explain", str(checkpoints["lm"]), "--data", str(fifo)])
    assert result.exit_code == 2 and "not a regular file" in result.output


# -- in a real browser -----------------------------------------------------------------

def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (apt-get install chromium): the page is not opened in a "
                "browser here")


def _open(browser, page, fragment, *extra):
    """Chromium's headless run of the page at ``#fragment``: (stdout, stderr)."""
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=5000", *extra,
                          f"{page.resolve().as_uri()}#{fragment}"],
                         capture_output=True, text=True, timeout=120)
    return run.stdout, run.stderr


def _colours(dom):
    return re.findall(r'<span class="tok[^"]*"[^>]*style="[^"]*background: ([^;"]+)', dom)


def test_page_in_a_browser(checkpoints, tmp_path):
    browser = _browser()
    text = 'print("hello") # (x)\nsay "yes"\n'
    page = explain(checkpoints["lm"], tmp_path / "page.html", text=text)["page"]
    # a tagger's words are whole strings: "<!--<script>" must not keep the page's script
    # element open (the page would stay blank)
    tricky = explain(checkpoints["tag"], tmp_path / "tricky.html",
                     text="the <!--<script> dog </script> runs")["page"]
    dom, log = _open(browser, tricky, "quantity=h&unit=0", "--dump-dom")
    assert 'data-ready="1"' in re.search(r"<body[^>]*>", dom).group(0), log[-2000:]
    assert dom.count('<span class="tok') == 5
    doms = {}
    for fragment in ("quantity=h&unit=0", "quantity=h&unit=1", "quantity=f&unit=0",
                     "quantity=input contribution&target=1"):
        dom, log = _open(browser, page, fragment.replace(" ", "%20"), "--dump-dom")
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert 'data-ready="1"' in body, (body, log[-2000:])
        assert "data-errors" not in body, body
        assert "Uncaught" not in log, log[-2000:]
        assert dom.count('<span class="tok') == len(text)
        doms[fragment] = _colours(dom)
        assert len(doms[fragment]) == len(text)
    # another unit, another gate, the contributions: other colours
    first = doms["quantity=h&unit=0"]
    assert all(doms[f] != first for f in doms if f != "quantity=h&unit=0")
    shot = tmp_path / "page.png"
    _open(browser, page, "quantity=c&unit=2", f"--screenshot={shot}", "--window-size=1200,900")
    assert shot.is_file() and shot.stat().st_size > 10_000
