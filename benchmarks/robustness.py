"""Hostile and careless inputs against the rnnkit command line, each in its own process
under a time limit and an address-space limit; a table of what each gave.

    python benchmarks/robustness.py run [--out benchmarks/results]

Each case is a command (and sometimes a fault: a signal, a closed stdout, a second
process, a full disk) with the outcome it must have: ``refused`` (a non-zero exit with
one ``error:`` line on stderr and no traceback), ``ok`` (exit 0) or a named exit status.
A case that times out, prints a traceback, or ends otherwise is a defect. The suite's
tests cover each of these faults one by one; this sweep runs them all from the outside,
the way a user meets them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RNNKIT = [sys.executable, "-m", "rnnkit"]
TINY = ["--hidden-size", "4", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
        "--no-progress"]
#: every case runs under these limits: a hang or an unbounded allocation shows as such
TIME_LIMIT_S, MEMORY_LIMIT = 90, 4 << 30


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _start(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*RNNKIT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_limits,
                            **kwargs)


def _finish(proc, started):
    try:
        out, err = proc.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"code": "timeout", "seconds": time.monotonic() - started, "stdout": out,
                "stderr": err}
    return {"code": proc.returncode, "seconds": time.monotonic() - started, "stdout": out,
            "stderr": err}


def _run(args, **kwargs):
    started = time.monotonic()
    return _finish(_start(args, **kwargs), started)


def _signal_after(args, signum, wait_for):
    """Start ``args``, send ``signum`` once ``wait_for`` exists, then finish."""
    started = time.monotonic()
    proc = _start(args)
    while not Path(wait_for).exists() and proc.poll() is None and \
            time.monotonic() - started < TIME_LIMIT_S:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signum)
    return _finish(proc, started)


def _crafted(source, path, change):
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _laughs(payload):
    value = [0.0] * 10
    for _ in range(9):
        value = [value] * 10
    payload["history"] = [{"step": 1, "note": value}]


def _nested(payload):
    value = []
    for _ in range(200):
        value = [value]
    payload["history"] = value


def _zip_bomb(source, path):
    import zipfile
    with zipfile.ZipFile(source) as good, zipfile.ZipFile(path, "w") as out:
        for info in good.infolist():
            out.writestr(info, good.read(info))
        prefix = good.infolist()[0].filename.split("/")[0]
        out.writestr(f"{prefix}/data/999", b"\0" * (512 << 20), zipfile.ZIP_DEFLATED)
    return path


class _Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def cases(d: Path) -> list[tuple[str, str, object]]:
    """(name, expected outcome, how to run it) for every case, with files made in ``d``."""
    fifo = d / "fifo"
    os.mkfifo(fifo)
    files = {
        "big.toml": 'lr = "' + "x" * (2 << 20) + '"\n',
        "deep.toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "lr.toml": 'lr = "0.1"\n', "bf16.toml": 'bf16 = "yes"\n', "key.toml": "zonout = 0.1\n",
        "commas.csv": ",,\n,,\n", "huge.csv": "a,b\n1," + "9" * 200_000 + "\n",
        "inf.csv": "t,v\n" + "".join(f"{i},{i % 5}.0\n" for i in range(60)) + "61,1e39\n",
        "short.txt": "hi there", "one.tsv": "a\tb c\n",
        "text.txt": "hello world, " * 300,
        "pairs.tsv": "".join(f"ab{i}\tba{i}\n" for i in range(40)),
        "many_words.txt": " ".join(f"w{i}" for i in range(200_000)),
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "a_file").touch()
    (d / "empty.pt").touch()
    # tiny real runs to craft checkpoints from
    for task, extra in (("lm", ["--data", d / "text.txt", "--seq-len", "8"]),
                        ("translate", ["--data", d / "pairs.tsv"]), ("classify", [])):
        result = _run(["train", task, "--out", d / task, *TINY, *extra])
        assert result["code"] == 0, result["stderr"]
    lm = d / "lm" / "last.pt"
    (d / "truncated.pt").write_bytes(lm.read_bytes()[:2000])
    torch.save({"format": "rnnkit-checkpoint/1", "x": _Malicious()}, d / "malicious.pt")
    crafted = {
        "hidden_20000.pt": lambda p: p["model_config"]["rnn"].update(hidden_size=20_000),
        "layers_1e6.pt": lambda p: p["model_config"]["rnn"].update(num_layers=10 ** 6),
        "negative.pt": lambda p: p["model_config"].update(embedding_size=-3),
        "no_vocab.pt": lambda p: p["task"].pop("vocab"),
        "laughs.pt": _laughs, "nested.pt": _nested,
    }
    for name, change in crafted.items():
        _crafted(lm, d / name, change)
    _zip_bomb(lm, d / "bomb.pt")
    tr = d / "translate" / "best.pt"
    run = ["train", "adding", "--out"]
    return [
        # files where a file is expected
        ("--config FIFO", "refused", ["train", "adding", "--config", fifo]),
        ("--config /dev/zero", "refused", ["train", "adding", "--config", "/dev/zero"]),
        ("--config /dev/urandom", "refused", ["train", "adding", "--config", "/dev/urandom"]),
        ("--config with a 2 MB value", "refused", ["train", "adding", "--config", d / "big.toml"]),
        ("--config nested 5000 deep", "refused", ["train", "adding", "--config", d / "deep.toml"]),
        ("--config lr = \"0.1\"", "refused", ["train", "adding", "--config", d / "lr.toml"]),
        ("--config bf16 = \"yes\"", "refused", ["train", "adding", "--config", d / "bf16.toml"]),
        ("--config unknown key", "refused", ["train", "adding", "--config", d / "key.toml"]),
        ("predict --file FIFO", "refused", ["predict", d / "classify" / "best.pt", "--file", fifo]),
        ("predict --file /dev/zero", "refused", ["predict", d / "classify" / "best.pt", "--file",
                                                 "/dev/zero"]),
        ("--data FIFO", "refused", ["train", "forecast", "--data", fifo, "--out", d / "r1", *TINY]),
        ("--data CSV of commas", "refused", ["train", "forecast", "--data", d / "commas.csv",
                                             "--out", d / "r2", *TINY]),
        ("--data CSV with a 200k-char cell", "refused", ["train", "forecast", "--data",
                                                         d / "huge.csv", "--out", d / "r3", *TINY]),
        ("--data CSV with 1e39", "refused", ["train", "forecast", "--data", d / "inf.csv",
                                             "--index-column", "t", "--out", d / "r4", *TINY]),
        ("--data text too short", "refused", ["train", "lm", "--data", d / "short.txt", "--out",
                                              d / "r5", *TINY]),
        ("--data TSV of one line", "refused", ["train", "classify", "--data", d / "one.tsv",
                                               "--out", d / "r6", *TINY]),
        ("--data 200,000 distinct words", "ok", ["train", "lm", "--level", "word", "--data",
                                                 d / "many_words.txt", "--seq-len", "8", "--out",
                                                 d / "r7", *TINY]),
        # checkpoints
        ("info FIFO", "refused", ["info", fifo]),
        ("info /dev/zero", "refused", ["info", "/dev/zero"]),
        ("info empty file", "refused", ["info", d / "empty.pt"]),
        ("info truncated checkpoint", "refused", ["info", d / "truncated.pt"]),
        ("info pickle that runs os.system", "refused", ["info", d / "malicious.pt"]),
        ("info zip bomb (512 MB deflated)", "refused", ["info", d / "bomb.pt"]),
        ("info config hidden_size 20000", "refused", ["info", d / "hidden_20000.pt"]),
        ("info config num_layers 10^6", "refused", ["info", d / "layers_1e6.pt"]),
        ("info negative embedding size", "refused", ["info", d / "negative.pt"]),
        ("info billion-laughs history", "refused", ["info", d / "laughs.pt"]),
        ("info history nested 200 deep", "refused", ["info", d / "nested.pt"]),
        ("sample without a vocabulary", "refused", ["sample", d / "no_vocab.pt"]),
        # absurd flags
        ("--num-layers 1000000", "refused", [*run, d / "r8", "--num-layers", 10 ** 6]),
        ("--hidden-size 10^7", "refused", [*run, d / "r9", "--hidden-size", 10 ** 7]),
        ("--hidden-size 20000 (6.4 GB)", "refused", [*run, d / "r10", "--hidden-size", 20_000,
                                                    "--no-progress"]),
        ("--seed 2^63", "refused", [*run, d / "r11", "--seed", 2 ** 63]),
        ("--lr nan", "refused", [*run, d / "r12", "--lr", "nan"]),
        ("--option forget_bias=nan", "refused", [*run, d / "r13", "--option", "forget_bias=nan"]),
        ("--option zonout=0.1 (typo)", "refused", [*run, d / "r14", "--option", "zonout=0.1"]),
        ("--max-vocab 3", "refused", ["train", "lm", "--max-vocab", 3, "--out", d / "r15"]),
        ("sample --length 10^12", "refused", ["sample", lm, "--prompt", "he", "--length",
                                              10 ** 12]),
        ("translate a 10 kB source", "refused", ["translate", tr, "ab" * 5000]),
        ("translate ''", "refused", ["translate", tr, ""]),
        ("translate all-unknown text", "refused", ["translate", tr, "zzz"]),
        ("translate --beam-size 0", "refused", ["translate", tr, "ab1", "--beam-size", 0]),
        ("translate --beam-size 10^6", "refused", ["translate", tr, "ab1", "--beam-size",
                                                   10 ** 6]),
        ("bench --save-to a file", "refused", ["bench", "--size", "2,1,2,2", "--save-to",
                                               d / "a_file"]),
        ("export --out the checkpoint", "refused", ["export", lm, "--out", lm]),
        ("train --out a file", "refused", [*run, d / "a_file"]),
        # faults during a run
        ("SIGTERM during training", 143, lambda: _signal_after(
            [*run, d / "sig1", "--max-steps", 100000, "--eval-every", 50, "--seq-len", 20,
             "--no-progress"], signal.SIGTERM, d / "sig1" / "last.pt")),
        ("SIGINT during training", 130, lambda: _signal_after(
            [*run, d / "sig2", "--max-steps", 100000, "--eval-every", 50, "--seq-len", 20,
             "--no-progress"], signal.SIGINT, d / "sig2" / "last.pt")),
        ("resume after SIGTERM", "ok", [*run, d / "sig1", "--resume", "--max-steps", 120]),
        ("second train on a folder in use", "refused", lambda: _concurrent(d)),
        ("stdout closed at once", "ok", lambda: _closed_stdout(d)),
        ("stdout on /dev/full", "ok", lambda: _full_stdout(d)),
    ]


def _concurrent(d: Path):
    first = _start(["train", "adding", "--out", d / "busy", "--max-steps", 100000,
                    "--seq-len", 20, "--no-progress"])
    while not (d / "busy" / ".rnnkit.lock").exists():
        time.sleep(0.05)
    time.sleep(1)
    second = _run(["train", "adding", "--out", d / "busy", "--resume", "--max-steps", 10])
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=TIME_LIMIT_S)
    return second


def _closed_stdout(d: Path):
    started = time.monotonic()
    proc = _start(["train", "adding", "--out", d / "closed", "--max-steps", 60,
                   "--eval-every", 20, "--seq-len", 10, "--no-progress"])
    proc.stdout.close()  # the reader went away, like `| head -0`
    result = _finish(proc, started)
    result["saved"] = (d / "closed" / "summary.json").is_file()
    return result


def _full_stdout(d: Path):
    started = time.monotonic()
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(
            [*RNNKIT, "train", "adding", "--out", str(d / "full"), "--max-steps", "60",
             "--eval-every", "20", "--seq-len", "10", "--no-progress"], stdout=full,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            preexec_fn=_limits)
        result = _finish(proc, started)
    result["saved"] = (d / "full" / "summary.json").is_file()
    return result


def verdict(expected, result) -> str:
    code, err = result["code"], result["stderr"]
    if code == "timeout":
        return "DEFECT: timed out"
    if "Traceback" in err:
        return "DEFECT: traceback"
    if expected == "refused":
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        if code == 0:
            return "DEFECT: accepted"
        if len(errors) != 1:
            return f"DEFECT: {len(errors)} error lines"
        return "as expected"
    if expected == "ok":
        if code != 0 or not result.get("saved", True):
            return f"DEFECT: exit {code}"
        return "as expected"
    return "as expected" if code == expected else f"DEFECT: exit {code}, not {expected}"


def run(out: Path) -> Path:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, expected, how in cases(Path(tmp)):
            result = how() if callable(how) else _run(how)
            lines = [line for line in result["stderr"].splitlines() if line.strip()]
            rows.append({"case": name, "expected": expected, "exit": result["code"],
                         "seconds": round(result["seconds"], 2),
                         "message": (lines[-1] if lines else "")[:240],
                         "verdict": verdict(expected, result)})
            print(f"{rows[-1]['verdict']:>22}  {name}: {rows[-1]['message'][:110]}",
                  flush=True)
    stamp = datetime.date.today().strftime("%Y%m%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-robustness.json").write_text(json.dumps(rows, indent=1) + "\n")
    defects = sum(r["verdict"] != "as expected" for r in rows)
    lines = [f"# Hostile inputs against the command line ({stamp})", "",
             f"`python benchmarks/robustness.py run`: {len(rows)} cases, each in its own "
             f"process under {TIME_LIMIT_S} s and a {MEMORY_LIMIT >> 30} GiB address-space "
             f"limit; {defects} defect(s).", "",
             "| case | expected | exit | seconds | verdict | last stderr line |",
             "|---|---|---:|---:|---|---|"]
    for r in rows:
        message = r["message"].replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['expected']} | {r['exit']} | {r['seconds']} | "
                     f"{r['verdict']} | {message} |")
    path = out / f"{stamp}-robustness.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run every case and write the table")
    go.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    print(run(args.out))


if __name__ == "__main__":
    main()
