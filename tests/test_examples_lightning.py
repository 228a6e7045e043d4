"""examples/lightning_bf16.py: an rnnkit layer-norm LSTM in a LightningModule, trained with
bf16-mixed precision for a few steps (where Lightning is installed: the test extras
install it)."""

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("lightning")


def test_lightning_bf16_mixed_trains_a_layer_norm_lstm():
    path = Path(__file__).parent.parent / "examples" / "lightning_bf16.py"
    spec = importlib.util.spec_from_file_location("lightning_bf16", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    mse = example.main(steps=6)
    assert math.isfinite(mse) and mse < 2.0
