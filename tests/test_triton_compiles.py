"""The triton engine's kernels compile for real GPUs, here without one: Triton's compiler
takes each kernel through to a cubin for sm_90 (H100, H200) and sm_80 (A100) with
every option on. The interpreter runs the kernels' math in the other tests, but only a
compile finds what a GPU build refuses (a dot smaller than 16, a type that changes in a
loop, an unsupported float64 operation)."""

import inspect
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
pytest.importorskip("triton.backends.nvidia.compiler", reason="this Triton has no NVIDIA backend")

SIZES = ("H", "T", "B")  # int arguments; other upper-case names are pointers
ON = {"CARRY_H": True, "CARRY_C": True, "MASKED": True, "SAVE": True}


def cases(K):
    """{name: (kernel, flags)}: each kernel with every option on, and the off-paths that
    change its code (the projection, no carries)."""
    return {
        "rnn_forward-tanh": (K.rnn_forward, {"ACT": 0, "LN": True, "CARRY": True,
                                             "MASKED": True, "SAVE": True, "BLOCK": 64}),
        "rnn_forward-relu": (K.rnn_forward, {"ACT": 1, "LN": False, "CARRY": False,
                                             "MASKED": False, "SAVE": False, "BLOCK": 64}),
        "rnn_backward": (K.rnn_backward, {"ACT": 2, "LN": True, "CARRY": True, "MASKED": True,
                                          "BLOCK": 64}),
        "lstm_forward": (K.lstm_forward, {"LN": True, "PEEP": True, "PROJ": False, **ON,
                                          "BLOCK": 128}),
        "lstm_forward-proj": (K.lstm_forward, {"LN": False, "PEEP": True, "PROJ": True, **ON,
                                               "BLOCK": 128}),
        "lstm_backward": (K.lstm_backward, {"LN": True, "PEEP": True, "PROJ": False,
                                            "CARRY_H": True, "CARRY_C": True, "MASKED": True,
                                            "BLOCK": 128}),
        "lstm_backward-proj": (K.lstm_backward, {"LN": False, "PEEP": False, "PROJ": True,
                                                 "CARRY_H": False, "CARRY_C": True,
                                                 "MASKED": False, "BLOCK": 128}),
        "gru_forward": (K.gru_forward, {"LN": True, "HAS_BHH": True, "CARRY": True,
                                        "MASKED": True, "SAVE": True, "BLOCK": 128}),
        "gru_backward": (K.gru_backward, {"LN": True, "CARRY": True, "MASKED": True,
                                          "BLOCK": 128}),
        # the persistent kernels at each block of units they run (LLVM's vectorizer has
        # failed on one combination of options and block size only)
        **{f"persistent_forward-{name}-{h}": (K.persistent_forward, {
            "FAMILY": family, "ACT": 0, "PEEP": family == 1, "HAS_BHH": True, **ON,
            "BLOCK_B": 16, "BLOCK_H": h})
           for family, name in enumerate(("rnn", "lstm", "gru")) for h in (16, 32, 64)},
        **{f"persistent_backward-{name}-{h}": (K.persistent_backward, {
            "FAMILY": family, "ACT": 0, "PEEP": family == 1, "CARRY_H": True, "CARRY_C": True,
            "MASKED": True, "BLOCK_B": 16, "BLOCK_H": h})
           for family, name in enumerate(("rnn", "lstm", "gru")) for h in (16, 32, 64)},
    }


def compile_one(fn, flags, dtype: str, arch: int) -> str:
    """Compile ``fn`` to a cubin; returns "" or what went wrong."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(fn.fn).parameters)
    declared = [p.name for p in fn.params if p.is_constexpr]  # as Triton's launcher reads them
    if set(declared) != set(flags):
        return f"compile-time flags {declared}, given {sorted(flags)}"
    signature = {n: "constexpr" if n in flags else f"*{dtype}" if n.isupper() and n not in SIZES
                 else "fp32" if n == "eps" else "i32" for n in names}
    source = ASTSource(fn, signature=signature,
                       constexprs={(names.index(n),): v for n, v in flags.items()})
    warps = 4
    if fn.fn.__name__.startswith("persistent"):  # as triton_loop launches them
        warps = 8 if flags["BLOCK_H"] <= 32 else 16
    try:
        kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": warps})
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "" if kernel.asm.get("cubin") else "no cubin"


FLOAT32_SM90 = ["rnn_forward-tanh", "rnn_forward-relu", "rnn_backward", "lstm_forward",
                "lstm_forward-proj", "lstm_backward", "lstm_backward-proj", "gru_forward",
                "gru_backward", *(f"persistent_{p}-{n}-{h}" for p in ("forward", "backward")
                                  for n in ("rnn", "lstm", "gru") for h in (16, 32, 64))]
FLOAT64_SM80 = ["lstm_forward", "lstm_backward", "persistent_forward-lstm-64",
                "persistent_backward-gru-64"]


@pytest.fixture(scope="module")
def compiled():
    """Every case compiled in one process of its own, where Triton is imported with
    TRITON_INTERPRET unset (this one runs the interpreter, whose jitted library
    functions a GPU compile cannot use)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_cases_cover_every_kernel():
    import rnnkit.engines.triton_cells as K

    kernels = {name for name, v in vars(K).items() if hasattr(v, "fn") and not name.startswith("_")}
    assert {fn.fn.__name__ for fn, _ in cases(K).values()} == kernels


@pytest.mark.parametrize("name", FLOAT32_SM90)
def test_compiles_for_sm90_in_float32(compiled, name):
    assert compiled[f"{name} fp32 sm90"] == ""


@pytest.mark.parametrize("name", FLOAT64_SM80)
def test_compiles_for_sm80_in_float64(compiled, name):
    assert compiled[f"{name} fp64 sm80"] == ""


if __name__ == "__main__":
    import rnnkit.engines.triton_cells as K

    table = cases(K)
    results = {}
    for names, dtype, arch in ((FLOAT32_SM90, "fp32", 90), (FLOAT64_SM80, "fp64", 80)):
        for name in names:
            results[f"{name} {dtype} sm{arch}"] = compile_one(*table[name], dtype, arch)
    print(json.dumps(results))
