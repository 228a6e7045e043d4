"""rnnkit inside PyTorch Lightning: a layer-norm LSTM trained with bf16-mixed precision.

    python examples/lightning_bf16.py            # a short run on the adding problem

rnnkit's layers are plain torch.nn modules, so a LightningModule holds one like any other
layer; under ``precision="bf16-mixed"`` the layer runs its recurrence in float32 inside
autocast and returns what torch.nn's LSTM would (bfloat16 on the CPU).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

import rnnkit
from rnnkit.data import adding_problem


class AddingRegressor(L.LightningModule):
    """ŷ = w · h_T + b from a layer-norm LSTM read over the adding problem's sequence."""

    def __init__(self, hidden_size: int = 32, lr: float = 3e-3):
        super().__init__()
        self.rnn = rnnkit.LSTM(2, hidden_size, batch_first=True, layer_norm=True)
        self.head = nn.Linear(hidden_size, 1)
        self.lr = lr

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[:, -1]).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x).float(), y)
        self.log("train_mse", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def batches(steps: int, batch_size: int = 32, T: int = 50) -> DataLoader:
    """``steps`` batches of the adding problem, one seed each (already batched)."""
    return DataLoader([adding_problem(batch_size, T, seed=step) for step in range(steps)],
                      batch_size=None)


def main(steps: int = 50) -> float:
    """Train for ``steps`` steps; returns the last training MSE."""
    torch.manual_seed(0)
    model = AddingRegressor()
    trainer = L.Trainer(max_steps=steps, precision="bf16-mixed", accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False)
    trainer.fit(model, train_dataloaders=batches(steps))
    return float(trainer.callback_metrics["train_mse"])


if __name__ == "__main__":
    print(f"training MSE after 50 steps: {main():.4f}")
