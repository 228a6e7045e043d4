"""Values and files that used to be accepted silently, hang or allocate without bound:
each is refused at once with an error naming the argument."""

import math
import os

import pytest
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.data import read_csv_series
from rnnkit.train import api
from rnnkit.train.tasks import TaskOptions
from rnnkit.train.trainer import TrainConfig

runner = CliRunner()
TINY = ["--hidden-size", "4", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
        "--no-progress"]


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: TrainConfig(warmup_steps=math.inf), ValueError, r"warmup_steps must be an int >= 0, got inf"),
    (lambda: TrainConfig(patience=1.5), ValueError, r"patience must be an int >= 1 or None, got 1.5"),
    (lambda: TrainConfig(seed=2 ** 63), ValueError, r"seed must be an int in \[0, 1048576\)"),
    (lambda: TrainConfig(seed=-1), ValueError, r"seed must be an int in"),
    (lambda: TrainConfig(bf16="yes"), TypeError, r"bf16 must be a bool \(true or false\), got 'yes'"),
    (lambda: TaskOptions(num_layers=10 ** 6), ValueError, r"num_layers must be at most 1,000"),
    (lambda: TaskOptions(hidden_size=10 ** 7), ValueError, r"hidden_size must be at most 65,536"),
    (lambda: TaskOptions(seed=2 ** 63), ValueError, r"seed must be in \[0, 1048576\)"),
    (lambda: rnnkit.LSTM(2, 3, forget_bias=math.nan), ValueError, r"forget_bias must be finite"),
    (lambda: rnnkit.LSTMCell(2, 3, forget_bias=math.inf), ValueError, r"forget_bias must be finite"),
    (lambda: rnnkit.MinGRU(2, 3, forget_bias=math.nan), ValueError, r"forget_bias must be finite"),
])
def test_values_refused_before_anything_runs(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_config_and_text_files_must_be_small_regular_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block forever
    for args in (["train", "adding", "--config", str(fifo)],
                 ["train", "adding", "--config", "/dev/zero"],
                 ["predict", str(tmp_path / "x.pt"), "--file", str(fifo)]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and "it is not a regular file" in result.output, args
    big = tmp_path / "big.toml"
    big.write_text('lr = "' + "x" * (2 << 20) + '"\n')
    result = runner.invoke(app, ["train", "adding", "--config", str(big)])
    assert result.exit_code != 0 and "more than the 1,048,576 --config may have" in result.output
    assert len(result.output) < 500  # one short line, not the value
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("bf16 = \"yes\"\n")
    result = runner.invoke(app, ["train", "adding", "--config", str(wrong), "--out",
                                 str(tmp_path / "run")])
    assert result.exit_code != 0 and "bf16 must be a bool" in result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_csv_values_beyond_float32_are_refused_with_their_place(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("t,v\n1,1.0\n\n2,1e39\n")
    with pytest.raises(ValueError, match=r"s.csv, line 4, column 'v': 1e\+39 is beyond float32"):
        read_csv_series(csv, ["v"], "t")


def test_translate_and_sample_refuse_what_they_cannot_do(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"ab{i}\tba{i}\n" for i in range(40)))
    out = tmp_path / "translate"
    assert runner.invoke(app, ["train", "translate", "--data", str(pairs), "--out", str(out),
                               *TINY]).exit_code == 0
    checkpoint = out / "best.pt"
    for text, kwargs, pattern in [("", {}, "the text to translate is empty"),
                                  ("zzz", {}, "none of the 3 tokens"),
                                  ("ab1", {"beam_size": 0}, "beam_size must be an int in"),
                                  ("ab1", {"beam_size": -2}, "beam_size must be an int in"),
                                  ("ab1", {"beam_size": 10 ** 6}, r"in \[1, 64\] \(1: greedy\)"),
                                  ("ab" * 1500, {}, "more than the 2,000")]:
        with pytest.raises(ValueError, match=pattern):
            api.translate(checkpoint, text, **kwargs)
    assert isinstance(api.translate(checkpoint, "ab1"), str)
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 200)
    out = tmp_path / "lm"
    assert runner.invoke(app, ["train", "lm", "--data", str(text), "--seq-len", "8",
                               "--out", str(out), *TINY]).exit_code == 0
    result = runner.invoke(app, ["sample", str(out / "best.pt"), "--prompt", "he",
                                 "--length", str(10 ** 12)])
    assert result.exit_code != 0 and "length must be an int in [0, 100,000]" in result.output


def test_predict_forecasts_only_the_series_it_was_trained_on(tmp_path):
    out = tmp_path / "forecast"
    assert runner.invoke(app, ["train", "forecast", "--seq-len", "12", "--horizon", "3",
                               "--out", str(out), *TINY]).exit_code == 0
    with pytest.raises(ValueError, match=r"columns \['volume'\], the checkpoint's model was "
                                         r"trained on \['SUNACTIVITY'\]"):
        api.predict(out / "best.pt", data="nile")
    short = tmp_path / "short.csv"
    short.write_text("year,SUNACTIVITY\n" + "".join(f"{y},{y % 7}.0\n" for y in range(5)))
    with pytest.raises(ValueError, match="5 steps, fewer than the model's input window of 12"):
        api.predict(out / "best.pt", data=str(short))
    assert len(api.predict(out / "best.pt")["forecast"]) == 3


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    """A tiny language-model checkpoint to craft bad ones from."""
    folder = tmp_path_factory.mktemp("lm")
    text = folder / "t.txt"
    text.write_text("hello world, " * 200)
    out = folder / "run"
    assert runner.invoke(app, ["train", "lm", "--data", str(text), "--seq-len", "8",
                               "--out", str(out), *TINY]).exit_code == 0
    return out / "last.pt"


def _crafted(source, path, change):
    """``source``'s payload changed by ``change`` and saved as ``path``."""
    import torch

    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _info_in_bounded_memory(path, gigabytes=3):
    """``rnnkit info path`` in a process that cannot allocate more than ``gigabytes``."""
    import resource
    import subprocess
    import sys

    limit = gigabytes << 30
    return subprocess.run(
        [sys.executable, "-m", "rnnkit", "info", str(path)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


def _nest(payload, depth):
    value = []
    for _ in range(depth):
        value = [value]
    payload["history"] = value


def _laughs(payload):
    value = [0.0] * 10
    for _ in range(9):  # 10**10 references to a handful of lists: a few hundred bytes
        value = [value] * 10
    payload["history"] = [{"step": 1, "note": value}]


@pytest.mark.parametrize("change, pattern", [
    # a config whose sizes would allocate gigabytes before the weights are looked at
    (lambda p: p["model_config"]["rnn"].update(hidden_size=20_000),
     r"weights do not fit its LanguageModel config: .*weight_hh_l0 is \(16, 4\), the config "
     r"needs \(80000, 20000\)"),
    (lambda p: p["model_config"]["rnn"].update(num_layers=10 ** 6),
     r"num_layers=1,000,000 but its model_state holds only \d+ tensors"),
    (lambda p: p["model_config"].update(embedding_size=-3),
     r"model_config is not a valid LanguageModel config"),
    (lambda p: p["model_state"].pop("head.bias"), r"weights do not fit .*missing head.bias"),
    (lambda p: p["task"].pop("vocab"), r"its task entry lacks vocab, which a 'lm' checkpoint"),
    (lambda p: _nest(p, 100), r"refused: its values are nested more than 32 levels deep"),
    (_laughs, r"refused: it holds more than 5,000,000 values"),
])
def test_crafted_checkpoints_are_refused_before_they_allocate(lm_checkpoint, tmp_path, change,
                                                              pattern):
    crafted = _crafted(lm_checkpoint, tmp_path / "crafted.pt", change)
    with pytest.raises(ValueError, match=pattern):
        api.describe(crafted)
    result = _info_in_bounded_memory(crafted)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_zip_bomb_is_refused_before_it_is_read(lm_checkpoint, tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(lm_checkpoint) as good, zipfile.ZipFile(bomb, "w") as out:
        for info in good.infolist():
            out.writestr(info, good.read(info))
        prefix = good.infolist()[0].filename.split("/")[0]
        # 256 MB of zeros deflated to a few hundred kB
        out.writestr(f"{prefix}/data/999", b"\0" * (256 << 20), zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(ValueError, match=r"refused: its [\d,]+-byte archive would expand to "
                                         r"[\d,]+ bytes"):
        api.describe(bomb)
    result = _info_in_bounded_memory(bomb, gigabytes=2)
    assert result.returncode == 2 and "would expand" in result.stderr


def test_a_fifo_or_device_as_checkpoint_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(ValueError, match="is not a regular file"):
            api.describe(path)


def test_a_sound_checkpoint_still_loads_in_bounded_memory(lm_checkpoint):
    result = _info_in_bounded_memory(lm_checkpoint)
    assert result.returncode == 0, result.stderr
    assert '"model": "LanguageModel"' in result.stdout


def test_a_vocabulary_built_from_the_data_is_capped(tmp_path):
    """Every distinct word of a large file would become a row of the embedding and of the
    output layer: --max-vocab keeps the most frequent ones, the rest read as <unk>."""
    from rnnkit.train.tasks import TASKS

    words = " ".join(f"w{i}" for i in range(3000)) + " common" * 50
    text = tmp_path / "words.txt"
    text.write_text(words)
    task = TASKS["lm"](TaskOptions(data=str(text), level="word", max_vocab=100))
    assert len(task.vocab) == 100 and "common" in task.vocab
    assert len(TASKS["lm"](TaskOptions(data=str(text), level="word")).vocab) == 3005
    tsv = tmp_path / "c.tsv"
    tsv.write_text("".join(f"{'ab'[i % 2]}\tx{i} y{i} z\n" for i in range(200)))
    assert len(TASKS["classify"](TaskOptions(data=str(tsv), max_vocab=10)).vocab) == 10
    conll = tmp_path / "t.conll"
    conll.write_text("".join(f"t{i} N\nz V\n\n" for i in range(200)))
    assert len(TASKS["tag"](TaskOptions(data=str(conll), max_vocab=6)).vocab) == 6
    for bad, pattern in ((4, "max_vocab must be at least 5"), (10 ** 9, "at most 10,000,000"),
                         (2.5, "max_vocab must be a positive int")):
        with pytest.raises(ValueError, match=pattern):
            TaskOptions(max_vocab=bad)
    result = runner.invoke(app, ["train", "lm", "--max-vocab", "3", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "max_vocab must be at least 5" in result.output


def test_predict_runs_many_texts_in_bounded_batches(tmp_path, monkeypatch):
    """A long --file is labelled in batches of at most PREDICT_BATCH_TOKENS tokens, in the
    input's order, with the same answers as one text at a time; an over-long text is
    refused by its index."""
    import torch

    from rnnkit.train.tasks import text as text_tasks

    monkeypatch.setattr(text_tasks, "PREDICT_BATCH_TOKENS", 40)
    for task in ("classify", "tag"):
        out = tmp_path / task
        assert runner.invoke(app, ["train", task, "--out", str(out), *TINY]).exit_code == 0
        model, payload = api.load(out / "best.pt")
        vocab = rnnkit.data.Vocabulary.from_dict(payload["task"]["vocab"])
        texts = [" ".join(vocab.tokens[4 + (i * 7 + j) % 20] for j in range(1 + i % 9))
                 for i in range(30)]
        seen = []
        forward = type(model).forward
        monkeypatch.setattr(type(model), "forward", lambda self, x, lengths=None:
                            seen.append(x.numel()) or forward(self, x, lengths))
        result = api.predict(out / "best.pt", texts)
        assert max(seen) <= 40 and len(seen) > 1
        for text, row in zip(texts, result):
            ids = torch.tensor([vocab.encode(text) if task == "classify" else
                                vocab.lookup(text.split())])
            with torch.no_grad():
                alone = forward(model, ids)[0]
            if task == "classify":
                assert row["text"] == text
                assert row["label"] == payload["task"]["labels"][int(alone.argmax())]
            else:
                assert row["tags"] == [payload["task"]["tags"][int(t)] for t in alone.argmax(-1)]
        monkeypatch.setattr(text_tasks, "MAX_TEXT_TOKENS", 5)
        with pytest.raises(ValueError, match=r"texts\[5\] has 6 tokens, more than the 5"):
            api.predict(out / "best.pt", texts)
        monkeypatch.undo()
        monkeypatch.setattr(text_tasks, "PREDICT_BATCH_TOKENS", 40)


def test_csv_faults_name_the_file_and_line(tmp_path):
    commas = tmp_path / "commas.csv"
    commas.write_text(",,\n,,\n")
    with pytest.raises(ValueError, match="commas.csv has no cells: only separators"):
        read_csv_series(commas)
    huge = tmp_path / "huge.csv"
    huge.write_text("a,b\n1,2\n3," + "9" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"huge.csv, line 3: not readable as CSV \(field "
                                         r"larger than field limit"):
        read_csv_series(huge)


def test_too_little_data_names_the_file(tmp_path):
    from rnnkit.train.tasks import TASKS

    short = tmp_path / "short.txt"
    short.write_text("hi there")
    with pytest.raises(ValueError, match=r"--data .*short.txt has 8 char-level tokens: too few"):
        TASKS["lm"](TaskOptions(data=str(short)))
    tsv = tmp_path / "one.tsv"
    tsv.write_text("a\tb c\n")
    with pytest.raises(ValueError, match=r"--data .*one.tsv has 1 examples: too few"):
        TASKS["classify"](TaskOptions(data=str(tsv)))


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """torch's writer reports a full disk as an internal error that names no file; a
    failed write says which file, that the disk is full, and leaves the last good
    checkpoint in place (fake writer: works without a small disk to fill)."""
    import errno

    import torch

    from rnnkit import _files
    from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        open(f, "wb").write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(_files, "_nearly_full", lambda folder: True)
    with pytest.raises(OSError, match=r"could not write .*last.pt: no space left on the "
                                      r"device; its previous content is intact") as info:
        save_checkpoint({"step": 2}, path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(_files.os, "fsync", no_space)
    with pytest.raises(OSError, match=r"could not write .*summary.json: no space left on the "
                                      r"device; nothing was written"):
        _files.write_text(tmp_path / "summary.json", "{}")


def _small_disk(folder, size="160k"):
    """A tmpfs of ``size`` mounted on ``folder``, or None where this process cannot mount."""
    import subprocess

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    return folder if done.returncode == 0 else None


def test_training_onto_a_full_disk_fails_in_one_line(tmp_path):
    import subprocess
    import sys

    disk = _small_disk(tmp_path / "disk")
    if disk is None:
        pytest.skip("cannot mount a tmpfs here (the fake-writer test covers the message)")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rnnkit", "train", "adding", "--out", str(disk / "run"),
             "--hidden-size", "96", "--max-steps", "4", "--eval-every", "2", "--seq-len", "5",
             "--no-progress"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 1, result.stderr
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "no space left on the device" in error[0], result.stderr
        assert "could not write" in error[0] and "Traceback" not in result.stderr
    finally:
        subprocess.run(["umount", str(disk)])


def test_warnings_are_one_line_each(tmp_path, monkeypatch):
    import warnings

    def describe(path, **options):
        warnings.warn("first line\n  second line\n\nthird", UserWarning)
        return {"ok": 1}

    monkeypatch.setattr(api, "describe", describe)
    result = runner.invoke(app, ["info", "x.pt"])
    assert result.exit_code == 0
    assert result.stderr.strip() == "warning: UserWarning: first line; second line; third"


def test_bench_checks_where_it_will_write_before_it_runs(tmp_path, monkeypatch):
    from rnnkit import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    a_file = tmp_path / "a_file"
    a_file.touch()
    for args, message in ((["--save-to", str(a_file)], "--save-to .*a_file is a file, not a folder"),
                          (["--json", str(a_file / "x.json")], "its folder .*a_file is a file"),
                          (["--json", str(tmp_path)], "is a folder; give a file name")):
        result = runner.invoke(app, ["bench", "--size", "2,1,2,2", *args])
        assert result.exit_code != 0, args
        assert __import__("re").search(message, result.output.replace("\n", " ")), result.output


def test_a_model_too_big_for_memory_names_the_sizes(tmp_path):
    """An allocation the machine cannot give (here: under a 3 GB address-space limit) is
    reported with the sizes and the flags that set them, not the allocator's message."""
    import resource
    import subprocess
    import sys

    limit = 3 << 30
    result = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "adding", "--hidden-size", "20000",
         "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True,
        timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: out of memory") and "hidden_size=20000" in result.stderr
    assert "lower --hidden-size, --num-layers, --batch-size or --seq-len" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
