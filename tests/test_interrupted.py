"""No lost work: a training process killed with SIGKILL at any moment, in the middle of
training or inside a checkpoint write, leaves a last checkpoint that loads, and
``rnnkit train --resume`` then ends with the same weights as a run never interrupted."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

runner = CliRunner()
# 24 steps, a checkpoint every 4: last.pt at 4, 8, ..., 24 (and best.pt when better).
# Dropout and zoneout draw random numbers, so resuming must restore the RNG. The Python
# fused engine: a child killed while it compiled the C++ one would leave torch's build
# lock behind, and every later build would wait on it.
ARGS = ["train", "adding", "--seq-len", "12", "--hidden-size", "8", "--batch-size", "4",
        "--num-layers", "2", "--dropout", "0.2", "--zoneout", "0.1", "--option",
        "backend=fused-python", "--max-steps", "24", "--eval-every", "4", "--seed", "3",
        "--no-progress", "--threads", "1"]

# Runs the rnnkit command in a child process, which stops still at the moment the test
# wants to kill it: it writes a marker file, then sleeps until the SIGKILL comes.
#   step:N       after training step N
#   save:N:WHERE inside the N-th checkpoint write: half-way through writing the
#                temporary file (torch.save), after it is on disk but before the rename
#                (fsync), or just after the rename (replace)
DRIVER = r"""
import io, os, sys, time
mode, marker = os.environ["KILL_AT"].split(":", 1), os.environ["KILL_MARKER"]

def stop_here():
    open(marker, "w").close()
    time.sleep(600)

if mode[0] == "step":
    from rnnkit.train import trainer
    n, init = int(mode[1]), trainer.Trainer.__init__
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs, on_step=lambda s: stop_here() if s == n else None)
    trainer.Trainer.__init__ = patched
elif mode[0] == "save":
    import torch
    from rnnkit.train import checkpoint
    n, where = mode[1].split(":")
    n, calls = int(n), {"torch.save": 0, "fsync": 0, "replace": 0}
    real = {"torch.save": torch.save, "fsync": os.fsync, "replace": os.replace}
    def counted(name):
        calls[name] += 1
        return calls[name] == n and where == name
    def save(obj, path, *args, **kwargs):
        buffer = io.BytesIO()
        real["torch.save"](obj, buffer)
        data = buffer.getvalue()
        with open(path, "wb") as f:
            if counted("torch.save"):
                f.write(data[:len(data) // 2])
                f.flush()
                stop_here()
            f.write(data)
    def fsync(fd):  # the checkpoints' only: metrics.csv and summary.json are synced too
        real["fsync"](fd)
        if ".pt." in os.readlink(f"/proc/self/fd/{fd}") and counted("fsync"):
            stop_here()
    def replace(src, dst):
        real["replace"](src, dst)
        if str(dst).endswith(".pt") and counted("replace"):
            stop_here()
    checkpoint.torch.save, os.fsync, os.replace = save, fsync, replace
from rnnkit.cli import app
app(sys.argv[1:], prog_name="rnnkit")
"""


def _killed_run(out, tmp_path, kill_at=None, delay=None):
    """Start the run in a child process; SIGKILL it at ``kill_at`` (see DRIVER), or
    ``delay`` seconds after its first checkpoint. Returns whether it was killed."""
    marker = tmp_path / "stopped"
    env = {**os.environ, "KILL_AT": kill_at or "none:", "KILL_MARKER": str(marker)}
    child = subprocess.Popen([sys.executable, "-c", DRIVER, *ARGS, "--out", str(out)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for = marker if kill_at else out / "last.pt"
    deadline = time.monotonic() + 120
    while not wait_for.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if delay:
        time.sleep(delay)
    killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    output = child.communicate()[0].decode()
    if kill_at:
        assert killed and child.returncode == -signal.SIGKILL, output
    return killed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return load_checkpoint(out / "last.pt")["model_state"]


def _resume_and_compare(out, uninterrupted):
    result = runner.invoke(app, [*ARGS, "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.tmp"))  # resuming cleared what the killed writer left
    final = load_checkpoint(out / "last.pt")
    assert final["step"] == 24
    assert final["model_state"].keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(final["model_state"][name], value), name


@pytest.mark.parametrize("kill_at, step_on_disk", [
    ("step:10", 8),                 # in the middle of training, between checkpoints
    ("save:3:torch.save", 4),       # half of step 8's last.pt written to a temporary file
    ("save:3:fsync", 4),            # step 8's last.pt complete, not yet renamed into place
    ("save:3:replace", 8),          # step 8's last.pt in place, best.pt not yet written
])
def test_sigkill_then_resume_ends_with_the_same_weights(kill_at, step_on_disk, tmp_path,
                                                        uninterrupted):
    out = tmp_path / "run"
    _killed_run(out, tmp_path, kill_at=kill_at)
    payload = load_checkpoint(out / "last.pt")  # loads: no half-written checkpoint
    assert payload["step"] == step_on_disk
    if kill_at.startswith("save") and step_on_disk == 4:
        assert list(out.glob("last.pt.*.tmp"))  # the write that was cut short
    _resume_and_compare(out, uninterrupted)


def test_sigkill_at_random_moments(tmp_path, uninterrupted):
    """Kills at seeded random moments after the first checkpoint: whatever was being
    written (a checkpoint, metrics.csv, the plots), the last checkpoint loads and the
    resumed run ends with the same weights."""
    rng = random.Random(8)
    for i in range(2):
        out = tmp_path / f"run{i}"
        _killed_run(out, tmp_path, delay=rng.uniform(0, 0.4))
        assert load_checkpoint(out / "last.pt")["step"] % 4 == 0
        _resume_and_compare(out, uninterrupted)
