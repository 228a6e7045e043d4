"""Files from elsewhere never run code: each loader rnnkit has for a user's file (the
checkpoint, on every command that reads one and on resume; a vocabulary; a config file;
the data files; a run's metrics.csv) is given a pickle whose unpickling would write a
marker file, and must refuse it with a clear error while the marker never appears."""

import os
import pickle
import re

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import Vocabulary, read_conll, read_csv_series, read_pairs, read_text
from rnnkit.train.checkpoint import FORMAT, load_checkpoint

runner = CliRunner()


class _Payload:
    """Unpickling this runs ``command``: the attack a checkpoint from elsewhere could hold."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _payloads(marker):
    """Ways to run code on unpickling, each touching ``marker`` if it ever runs."""
    code = f"open({str(marker)!r}, 'w').close()"
    return {"os.system": _Payload(os.system, f"touch {marker}"),
            "builtins.exec": _Payload(exec, code),
            "builtins.eval": _Payload(eval, code)}


def _evil_files(tmp_path, marker):
    """Malicious checkpoint files in every format torch.load reads."""
    files = {}
    for name, payload in _payloads(marker).items():
        # inside an otherwise plausible rnnkit checkpoint, in torch's zip format
        path = tmp_path / f"{name}.pt"
        torch.save({"format": FORMAT, "model_class": "LanguageModel",
                    "model_state": {"weight": torch.ones(2)}, "step": payload}, path)
        files[path.name] = path
        legacy = tmp_path / f"{name}-legacy.pt"  # torch's pre-1.6 format
        torch.save({"format": FORMAT, "x": payload}, legacy, _use_new_zipfile_serialization=False)
        files[legacy.name] = legacy
        raw = tmp_path / f"{name}-raw.pt"  # a bare pickle
        raw.write_bytes(pickle.dumps(payload))
        files[raw.name] = raw
    return files


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a payload ran"


def test_the_payloads_are_real(tmp_path):
    """Unpickled without protection, each payload does write the marker: so a marker that
    never appears below means the loader refused it, not that the payload was a dud."""
    marker = tmp_path / "m"
    for name, payload in _payloads(marker).items():
        marker.unlink(missing_ok=True)
        pickle.loads(pickle.dumps(payload))
        assert marker.exists(), name


# torch's own formats reach the object and name it; a bare pickle of a recent protocol
# is refused at its first instruction the safe unpickler lacks
REFUSED = (r"refused: it holds more than tensors and plain values \(.*GLOBAL.*\); it was "
           r"not loaded and nothing in it ran")
UNREADABLE = r"is not a readable rnnkit checkpoint: it is corrupt or not a checkpoint"


def test_load_checkpoint_refuses_every_payload(tmp_path, marker):
    for name, path in _evil_files(tmp_path, marker).items():
        with pytest.raises(ValueError, match=UNREADABLE if name.endswith("-raw.pt") else REFUSED):
            load_checkpoint(path)
        assert not marker.exists(), name


@pytest.mark.parametrize("command", [
    ["sample"], ["eval"], ["info"], ["predict", None, "text"], ["translate", None, "text"],
    ["export"]])
def test_every_command_refuses_a_malicious_checkpoint(command, tmp_path, marker):
    files = _evil_files(tmp_path, marker)
    for path, pattern in ((files["os.system.pt"], REFUSED),
                          (files["builtins.exec-legacy.pt"], REFUSED),
                          (files["builtins.eval-raw.pt"], UNREADABLE)):
        result = runner.invoke(app, [command[0], str(path), *command[2:]])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert re.search(pattern, result.output), result.output
        assert not marker.exists()


def test_resume_refuses_a_malicious_last_checkpoint(tmp_path, marker):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(_evil_files(tmp_path, marker)["builtins.eval.pt"].read_bytes())
    result = runner.invoke(app, ["train", "adding", "--out", str(run), "--resume"])
    assert result.exit_code != 0 and "refused" in result.output
    assert not marker.exists()


def test_vocabulary_config_and_data_loaders_refuse_pickles(tmp_path, marker):
    """Vocabularies are JSON, configs TOML, data plain text: a pickle is only bytes to them."""
    for name, payload in _payloads(marker).items():
        blob = pickle.dumps(payload, protocol=0)  # protocol 0 is mostly ASCII: it decodes
        for suffix, load, pattern in (
                (".json", Vocabulary.load, "is not a vocabulary JSON file"),
                (".txt", read_pairs, "expected source<TAB>target"),
                (".conll", read_conll, "expected two columns"),
                (".csv", read_csv_series, "no numeric column|expected .* cells")):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(blob)
            with pytest.raises(ValueError, match=pattern):
                load(path)
        binary = tmp_path / f"{name}.bin"
        binary.write_bytes(pickle.dumps(payload))  # the default protocol: not UTF-8
        for load in (Vocabulary.load, read_text, read_pairs, read_conll, read_csv_series):
            with pytest.raises(ValueError, match="is not valid UTF-8"):
                load(binary)
        config = tmp_path / f"{name}.toml"
        config.write_bytes(blob)
        result = runner.invoke(app, ["train", "adding", "--config", str(config), "--out",
                                     str(tmp_path / "run")])
        assert result.exit_code == 2 and result.output.startswith("error: --config")
    # a text file holding a pickle is just text to the language model: it trains on it
    assert read_text(tmp_path / "os.system.txt").startswith("cposix\nsystem")
    assert not marker.exists()


def test_a_damaged_metrics_file_does_not_stop_a_resume(tmp_path, marker):
    out = tmp_path / "run"
    args = ["train", "adding", "--out", str(out), "--seq-len", "5", "--hidden-size", "4",
            "--eval-every", "2", "--no-progress", "--batch-size", "4"]
    assert runner.invoke(app, [*args, "--max-steps", "2"]).exit_code == 0
    (out / "metrics.csv").write_bytes(pickle.dumps(_payloads(marker)["os.system"]))
    result = runner.invoke(app, [*args, "--max-steps", "4", "--resume"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["step"] == 4
