"""Train a vanilla RNN, an LSTM and a GRU on the adding problem and print their losses.

The adding problem (Hochreiter & Schmidhuber 1997): each step carries a random value
and a marker; two steps are marked, and the target is the sum of their values. The
first marker sits in the first half of the sequence, so a model must carry it across
many steps. Always predicting the mean scores an MSE of about 0.167 (the variance of a
sum of two uniform values); the gated cells get far below it, the vanilla RNN struggles.

Run:  python examples/quickstart.py [--steps 600] [--length 40] [--backend fused]
"""

import argparse
import time

import torch
from torch import nn

import rnnkit
from rnnkit.data import adding_problem


class Regressor(nn.Module):
    """Many-to-one: read the sequence, predict from the last hidden state."""

    def __init__(self, layer: nn.Module, hidden: int):
        super().__init__()
        self.rnn, self.head = layer, nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backend", default="fused", choices=["auto", "native", "fused", "reference"])
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = {
        "RNN": rnnkit.RNN(2, args.hidden, batch_first=True, backend=args.backend),
        "LSTM": rnnkit.LSTM(2, args.hidden, batch_first=True, backend=args.backend),
        "GRU": rnnkit.GRU(2, args.hidden, batch_first=True, backend=args.backend),
    }
    print(f"adding problem, T={args.length}, {args.steps} steps of batch {args.batch}, "
          f"hidden {args.hidden}, backend={args.backend!r}; predicting the mean scores ~0.167")
    for name, layer in layers.items():
        model = Regressor(layer, args.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        start, losses = time.perf_counter(), []
        for step in range(1, args.steps + 1):
            x, y = adding_problem(args.batch, args.length, seed=step)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        x, y = adding_problem(1000, args.length, seed=10**6)  # held-out seed
        with torch.no_grad():
            test = nn.functional.mse_loss(model(x), y).item()
        curve = "  ".join(f"{sum(losses[i:i + 50]) / len(losses[i:i + 50]):.3f}"
                          for i in range(0, args.steps, 50))
        print(f"{name:>4}: train loss per 50 steps {curve} | test MSE {test:.4f} "
              f"| {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
