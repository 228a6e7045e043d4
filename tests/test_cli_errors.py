"""Every way to call rnnkit wrongly ends in one line ``error: ...`` and a non-zero exit,
never a traceback; ``--debug`` shows the traceback; a run folder is never overwritten
unless asked; a run that blows up numerically stops with a clear message."""

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint

runner = CliRunner()
TINY = ["--hidden-size", "8", "--max-steps", "2", "--eval-every", "2", "--no-progress",
        "--batch-size", "4", "--threads", "1"]


def _fails(args, message, code=None):
    """Run rnnkit with ``args``; it must fail with one error line holding ``message``."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert message in errors[0], result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny runs and every kind of broken file the commands below are given."""
    d = tmp_path_factory.mktemp("cli")
    corpus = d / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    for task, extra in (("lm", ["--data", corpus, "--seq-len", "10"]), ("digits", []),
                        ("tag", [])):
        result = runner.invoke(app, ["train", task, "--out", str(d / task), *TINY,
                                     *[str(e) for e in extra]])
        assert result.exit_code == 0, result.output
    good = (d / "lm" / "last.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[:len(good) // 3])
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.ones(3)}, d / "foreign.pt")
    payload = load_checkpoint(d / "lm" / "last.pt")
    tampered = {
        "no_weights": {k: v for k, v in payload.items() if k != "model_state"},
        "wrong_shapes": {**payload, "model_state": {k: v[..., :1] for k, v in
                                                   payload["model_state"].items()}},
        "big_vocab": {**payload, "task": {**payload["task"], "vocab": {
            **payload["task"]["vocab"], "tokens": payload["task"]["vocab"]["tokens"] + ["Ж"]}}},
        "unknown_model": {**payload, "model_class": "Transformer"},
        "bad_config": {**payload, "model_config": {**payload["model_config"], "depth": 3}},
    }
    for name, p in tampered.items():
        p = dict(p)
        p.pop("format", None)
        save_checkpoint(p, d / f"{name}.pt")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "cyrillic.txt").write_text("съешь же ещё этих мягких французских булок " * 30)
    (d / "empty.txt").write_text("")
    (d / "notab.tsv").write_text("pos\tgood film\nneg bad film\n")
    (d / "missing.csv").write_text("day,a,b\n1,1.0,2.0\n2,,3.0\n3,1.5,2.5\n")
    (d / "text.csv").write_text("day,a,b\n1,1.0,2.0\n2,x,3.0\n3,1.5,2.5\n")
    (d / "bad.toml").write_text("hidden_size = = 3\n")
    (d / "latin1.toml").write_bytes("cell = 'l\xe9stm'\n".encode("latin-1"))
    (d / "unknown.toml").write_text("hidden_sise = 8\n")
    (d / "layer.toml").write_text("layer_options = 3\n")
    (d / "type.toml").write_text('hidden_size = "big"\n')
    (d / "lr.toml").write_text('lr = "0.1"\n')
    (d / "decay.toml").write_text('weight_decay = -1\n')
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "a_file").write_text("")
    return d


def _bad_train_flags():
    """(extra arguments of ``rnnkit train``, task, the message)."""
    return [
        ("poetry", [], "TASK must be one of"),
        ("adding", ["--max-steps", "abc"], "Invalid value for '--max-steps'"),
        ("adding", ["--max-steps", "0"], "max_steps must be a positive int, got 0"),
        ("adding", ["--max-steps", "-3"], "max_steps must be a positive int, got -3"),
        ("adding", ["--eval-every", "0"], "eval_every must be a positive int"),
        ("adding", ["--lr", "0"], "lr must be > 0"),
        ("adding", ["--lr", "nan"], "lr must be > 0"),
        ("adding", ["--clip-grad-norm", "-1"], "clip_grad_norm must be > 0"),
        ("adding", ["--clip-grad-norm", "inf"], "clip_grad_norm must be > 0 and finite"),
        ("adding", ["--patience", "0"], "patience must be an int >= 1"),
        ("adding", ["--max-time", "0"], "max_time must be > 0"),
        ("adding", ["--schedule", "linear"], "schedule must be one of"),
        ("adding", ["--device", "tpu"], "device must be 'cpu' or 'cuda'"),
        ("adding", ["--threads", "0"], "--threads must be a positive int"),
        ("adding", ["--batch-size", "0"], "batch_size must be a positive int, got 0"),
        ("adding", ["--hidden-size", "0"], "hidden_size must be a positive int or None"),
        ("adding", ["--num-layers", "0"], "num_layers must be a positive int, got 0"),
        ("adding", ["--dropout", "1.5"], "dropout must be a number in [0, 1), got 1.5"),
        ("adding", ["--seq-len", "0"], "seq_len must be a positive int or None, got 0"),
        ("adding", ["--seq-len", "1"], "length must be an int >= 2, got 1"),
        ("forecast", ["--horizon", "0"], "horizon must be a positive int, got 0"),
        ("lm", ["--level", "byte"], "level must be one of ('char', 'word'), got 'byte'"),
        ("digits", ["--digits-mode", "spiral"], "digits_mode must be one of"),
        ("digits", ["--mixup", "-1"], "mixup must be a number >= 0 (Beta's alpha; 0: off), got -1"),
        ("adding", ["--mixup", "0.2"], "mixup applies to the digits task, not to adding; got 0.2"),
        ("lm", ["--label-smoothing", "0.1"],
         "label_smoothing applies to the classify, tag and digits tasks, not to lm; got 0.1"),
        ("adding", ["--cell", "tree"], "cell must be one of"),
        ("adding", ["--option", "oops"], "an --option is KEY=VALUE, got 'oops'"),
        ("adding", ["--option", "zoneout=2"], "zoneout must be a probability in [0, 1), got 2"),
        ("adding", ["--option", "init=magic"], "init must be one of"),
        ("adding", ["--option", "wings=2"], "unexpected keyword argument 'wings'"),
        ("adding", ["--zoneout", "-0.5"], "zoneout must be a probability in [0, 1)"),
        ("lm", ["--bidirectional"], "a LanguageModel reads left to right"),
        ("adding", ["--frobnicate"], "No such option: --frobnicate"),
    ]


@pytest.mark.parametrize("task, args, message", _bad_train_flags())
def test_bad_train_flags(task, args, message, tmp_path):
    _fails(["train", task, "--out", tmp_path / "run", "--no-progress", *args], message)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(tmp_path):
    _fails(["train", "adding", "--out", tmp_path, "--device", "cuda"],
           "device is 'cuda' but torch sees no CUDA device")


@pytest.mark.parametrize("task, data, message", [
    ("lm", "nowhere.txt", "no such file"),
    ("lm", "latin1.txt", "latin1.txt is not valid UTF-8: byte 0xe9 at byte offset 3"),
    ("lm", "empty.txt", "empty.txt is empty"),
    ("lm", ".", "holds no *.txt files"),
    ("classify", "notab.tsv", "notab.tsv, line 2: expected source<TAB>target, found no tab"),
    ("translate", "empty.txt", "holds no pairs"),
    ("tag", "notab.tsv", "notab.tsv, line 2: expected two columns"),
    ("forecast", "missing.csv", "missing.csv, line 3, column 'a': a missing value"),
    ("forecast", "text.csv", "text.csv, line 3, column 'a': 'x', not a finite number"),
])
def test_bad_data(task, data, message, files, tmp_path):
    folder = files / "empty_folder"
    folder.mkdir(exist_ok=True)
    path = folder if data == "." else files / data
    args = ["train", task, "--out", tmp_path / "run", "--data", path, *TINY]
    if task == "forecast":
        args += ["--index-column", "day", "--seq-len", "1", "--horizon", "1"]
    _fails(args, message)


def test_unknown_csv_column(files, tmp_path):
    _fails(["train", "forecast", "--out", tmp_path, "--data", files / "missing.csv",
            "--columns", "nope"], "columns ['nope'] are not columns of")


@pytest.mark.parametrize("config, message", [
    ("nowhere.toml", "no such file: "),
    ("bad.toml", "bad.toml: Invalid value"),
    ("latin1.toml", "is not valid UTF-8: byte 0xe9 at byte offset 9"),
    ("unknown.toml", "unknown.toml: unknown setting(s) ['hidden_sise']"),
    ("layer.toml", "layer_options must be a table of layer options, got 3"),
    ("type.toml", "type.toml: hidden_size must be a positive int or None, got 'big'"),
    ("lr.toml", "lr.toml: lr must be a number, got '0.1'"),
    ("decay.toml", "decay.toml: weight_decay must be >= 0 and finite, got -1"),
    ("deep.toml", "deep.toml: maximum recursion depth exceeded"),
])
def test_bad_config_files(config, message, files, tmp_path):
    _fails(["train", "adding", "--out", tmp_path, "--config", files / config], message)


def test_unwritable_output_folders(files, tmp_path):
    _fails(["train", "adding", "--out", files / "a_file"], "a_file is a file, not a folder")
    _fails(["train", "adding", "--out", files / "a_file" / "run"], "cannot be written")
    _fails(["gradflow", "--out", files / "a_file", "--T", "5"], "a_file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _fails(["train", "adding", "--out", locked], "cannot be written")


@pytest.mark.parametrize("command", [
    ["sample"], ["eval"], ["info"], ["predict"], ["translate", None, "hello"], ["export"]])
@pytest.mark.parametrize("checkpoint, message", [
    ("nowhere.pt", "checkpoint not found"),
    ("lm", "is a folder; pass a checkpoint file"),
    ("truncated.pt", "is not a readable rnnkit checkpoint: it is truncated, corrupt"),
    ("empty.pt", "is not a readable rnnkit checkpoint: it is empty"),
    ("text.pt", "is not a readable rnnkit checkpoint"),
    ("foreign.pt", "is not an rnnkit checkpoint (expected format"),
    ("no_weights.pt", "bad entries model_state (missing)"),
    ("wrong_shapes.pt", "weights do not fit its LanguageModel config: "),
    ("big_vocab.pt", "entries but the model's vocab_size is"),
    ("unknown_model.pt", "holds a 'Transformer', not one of"),
    ("bad_config.pt", "model_config is not a valid LanguageModel config"),
])
def test_bad_checkpoints_for_every_command(command, checkpoint, message, files):
    args = [command[0], files / checkpoint, *command[2:]]
    _fails(args, message)


@pytest.mark.parametrize("args, message", [
    (["sample", "digits/last.pt"], "this checkpoint is a 'digits' model; this needs a 'lm'"),
    (["translate", "lm/last.pt", "hello"], "this needs a 'translate' checkpoint"),
    (["predict", "lm/last.pt", "hello"], "predict works with 'classify', 'tag' and 'forecast'"),
    (["sample", "lm/last.pt", "--prompt", "the", "--length", "-5"],
     "length must be an int in [0, 100,000], got -5"),
    (["sample", "lm/last.pt", "--prompt", "the", "--temperature", "-1"],
     "temperature must be a finite number"),
    (["sample", "lm/last.pt", "--prompt", "the", "--top-k", "0"], "top_k must be an int >= 1"),
    (["sample", "lm/last.pt", "--prompt", "the", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["sample", "lm/last.pt", "--prompt", ""], "prompt must hold at least one token"),
    (["sample", "lm/last.pt", "--prompt", "Ωmega"],
     "prompt holds 1 token(s) the checkpoint's vocabulary does not know: ['Ω']"),
    (["sample", "lm/last.pt"],  # the default prompt "The ": the corpus has no capitals
     "prompt holds 1 token(s) the checkpoint's vocabulary does not know: ['T']"),
    (["eval", "lm/last.pt", "--data", "cyrillic.txt"],
     "the data does not match the checkpoint's vocabulary: 84% of its tokens are unknown "
     "to the checkpoint's vocab of"),
    (["eval", "lm/last.pt", "--data", "nowhere.txt"], "no such file"),
    (["eval", "lm/last.pt", "--data", "latin1.txt"], "not valid UTF-8: byte 0xe9 at byte offset 3"),
    (["predict", "tag/last.pt", "  "], "texts[0] holds no tokens to tag, got '  '"),
    (["predict", "digits/last.pt", "--file", "nowhere.txt"], "--file"),
    (["predict", "digits/last.pt", "--file", "latin1.txt"], "is not valid UTF-8: byte 0xe9 at byte offset 3"),
    (["export", "lm/last.pt", "--format", "tflite"], "--format must be 'onnx'"),
    (["gradflow", "--T", "0"], "T must be an int >= 2, got 0"),
    (["gradflow", "--T", "5", "--cells", "transformer"], "cells"),
    (["gradflow", "--T", "5", "--hidden-size", "0"], "hidden_size"),
    (["bench", "--repeats", "0"], "repeats must be >= 1"),
    (["bench", "--threads", "0"], "threads must be >= 1"),
    (["bench", "--dtype", "int8"], "dtype must be"),
    (["bench", "--size", "1,2,x,4"], "four positive ints"),
    (["trian", "adding"], "No such command 'trian'"),
    (["train"], "Missing argument"),
])
def test_bad_values_of_the_other_commands(args, message, files, tmp_path):
    args = [files / a if a.endswith((".pt", ".txt")) else a for a in args]
    if args[0] == "gradflow":
        args += ["--out", tmp_path / "gf", "--train-steps", "0"]
    _fails(args, message)


def test_eval_on_other_data_reports_unknown_tokens(files):
    other = files / "other.txt"
    other.write_text("the quick brown fox jumps over the lazy cat! " * 30)  # '!' is new
    result = runner.invoke(app, ["eval", str(files / "lm" / "last.pt"), "--data", str(other)])
    assert result.exit_code == 0, result.output
    share = float(result.output.split("unknown_tokens: ")[1].split()[0])
    assert share == pytest.approx(30 / len(other.read_text()), rel=1e-3)


def test_debug_shows_the_traceback(files):
    result = runner.invoke(app, ["--debug", "info", str(files / "truncated.pt")])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)  # raised, not turned into a line
    assert "not a readable rnnkit checkpoint" in str(result.exception)
    result = runner.invoke(app, ["info", str(files / "truncated.pt")])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2


def test_unexpected_errors_are_one_line_too(monkeypatch, files):
    from rnnkit.train import api

    def broken(path, **options):
        raise KeyError("model_state")

    monkeypatch.setattr(api, "describe", broken)
    line = _fails(["info", files / "lm" / "last.pt"], "KeyError: 'model_state'", code=1)
    assert "--debug" in line


def test_a_run_folder_is_never_overwritten_unless_asked(tmp_path):
    out = tmp_path / "run"
    args = ["train", "adding", "--out", str(out), "--seq-len", "5", *TINY]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "last.pt").read_bytes()
    _fails(args, "already holds a run (last.pt, best.pt, metrics.csv, curves.png, "
                 "summary.json)")
    assert (out / "last.pt").read_bytes() == before
    (out / "notes.txt").write_text("mine")
    (out / "last.pt.123.tmp").write_bytes(b"half")  # left by a writer that was killed
    _fails(args + ["--resume", "--overwrite"], "resume and overwrite exclude each other")
    result = runner.invoke(app, args + ["--max-steps", "3", "--eval-every", "3", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files go
    assert not (out / "last.pt.123.tmp").exists()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows if ",val," in r] == ["3"]  # the old run's rows went
    # a folder with only a run's metrics (it died before its first checkpoint) is a run too
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.csv").write_text("step,split,loss\n1,train,0.5\n")
    _fails(["train", "adding", "--out", tmp_path / "early"], "already holds a run (metrics.csv)")
    # gradflow's results likewise
    gf = ["gradflow", "--T", "5", "--hidden-size", "4", "--train-steps", "0", "--out",
          str(tmp_path / "gf")]
    assert runner.invoke(app, gf).exit_code == 0
    _fails(gf, "already holds results (gradflow.json): pass --overwrite")
    assert runner.invoke(app, gf + ["--overwrite"]).exit_code == 0


def test_resume_refuses_a_checkpoint_that_is_not_this_run(files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((files / "digits" / "last.pt").read_bytes())
    _fails(["train", "adding", "--out", run, "--resume"],
           "cannot resume: " + str(run / "last.pt") + " is a 'digits' run, not 'adding'")
    _fails(["train", "digits", "--out", run, "--resume", "--hidden-size", "16"],
           f"cannot resume with hidden_size=16: the run in {run} has hidden_size=")
    # other data than the run's
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "last.pt").write_bytes((files / "lm" / "last.pt").read_bytes())
    other = tmp_path / "other.txt"
    other.write_text("the quick brown fox jumps over the lazy dog? " * 30)  # '?' for '.'
    _fails(["train", "lm", "--out", lm, "--resume", "--data", other, "--seq-len", "10",
            "--hidden-size", "8"], f"cannot resume with data='{other}'")
    for name, message in (("truncated.pt", "not a readable rnnkit checkpoint"),
                          ("no_weights.pt", "bad entries model_state (missing)")):
        (run / "last.pt").write_bytes((files / name).read_bytes())
        _fails(["train", "lm", "--out", run, "--resume"], message)


def test_exploding_relu_rnn_is_reported_not_a_crash(tmp_path):
    """The vanilla RNN with relu and no clipping on long sequences: its state grows like
    ||W_hh||^T until the loss is inf. The Trainer skips those steps, reports each, and
    stops with one clear line; the checkpoint from before stays loadable and finite."""
    out = tmp_path / "relu"
    config = tmp_path / "no_warmup.toml"
    config.write_text("warmup_steps = 0\n")
    args = ["train", "adding", "--out", out, "--cell", "rnn", "--option", "nonlinearity=relu",
            "--option", "init=identity", "--seq-len", "400", "--hidden-size", "16",
            "--batch-size", "4", "--lr", "0.5", "--schedule", "constant", "--config", config,
            "--clip-grad-norm", "0", "--max-steps", "40", "--eval-every", "1",
            "--no-progress", "--threads", "1"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "skipped, loss" in result.output  # each skipped step is reported as it happens
    error = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1
    assert "training diverged" in error[0] and "not finite for 5 steps in a row" in error[0]
    assert "is intact" in error[0] and "turn gradient clipping back on" in error[0]
    payload = load_checkpoint(out / "last.pt")
    assert payload["train_config"]["clip_grad_norm"] is None  # clipping was off
    assert all(torch.isfinite(v).all() for v in payload["model_state"].values())
    assert ",skipped," in (out / "metrics.csv").read_text()


def test_clipping_is_on_by_default(files):
    for task in ("lm", "digits"):
        info = json.loads(runner.invoke(app, ["info", str(files / task / "last.pt")]).output)
        assert info["train_config"]["clip_grad_norm"] == 1.0
