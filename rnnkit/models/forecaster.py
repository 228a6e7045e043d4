"""Many-to-many over time series: a window of a multivariate series in, the next
``horizon`` values out, with the input and target scaling kept in the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models.base import ConfigurableModel, RecurrentConfig, check_inputs, check_streaming

MODES = ("direct", "autoregressive")


@dataclass
class ForecasterConfig:
    """A Forecaster: series width, horizon, how it forecasts, the recurrent layer."""

    #: features per step of the input series
    input_size: int = 1
    #: steps to forecast
    horizon: int = 1
    #: features forecast: the first output_size features of the input (None: all)
    output_size: int | None = None
    #: "direct" (one head emits every future step at once) or "autoregressive" (one step
    #: at a time, each forecast fed back as the next input; needs output_size = input_size)
    mode: str = "direct"
    #: a linear autoregressive skip: each forecast feature also gets a linear map of its
    #: own last ``skip_lags`` input values (one map from lags to horizon, shared by the
    #: features), added to the recurrent head's output, so the recurrence learns what a
    #: linear AR model misses (the "highway" of LSTNet, Lai et al. 2018); 0: off.
    #: Direct mode only; windows must be at least this long
    skip_lags: int = 0
    #: read each window relative to its last value and forecast the change from it (in
    #: standardised units; a simple form of the reversible instance normalisation of Kim
    #: et al. 2022): a series that trends out of the training range, such as co2, then
    #: stays in the range the model saw, instead of saturating its tanh units
    relative: bool = False
    #: standardise each window by its own spread (per feature; around its mean, or
    #: around its last value with ``relative``) and map the forecast back: the
    #: reversible instance normalisation of Kim et al. 2022, so a window whose swings
    #: are larger than any in the training data (the higher solar cycles) reaches the
    #: network at the scale it was trained on
    window_norm: bool = False
    rnn: RecurrentConfig = field(default_factory=RecurrentConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.output_size is None:
            self.output_size = self.input_size
        if not 1 <= self.output_size <= self.input_size:
            raise ValueError(f"output_size must be in [1, input_size={self.input_size}], "
                             f"got {self.output_size}")
        if self.mode == "autoregressive" and self.output_size != self.input_size:
            raise ValueError("mode='autoregressive' feeds forecasts back as inputs: it needs "
                             f"output_size == input_size, got {self.output_size} and {self.input_size}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.rnn.bidirectional and self.mode == "autoregressive":
            raise ValueError("mode='autoregressive' steps forward in time: rnn.bidirectional must be False")
        if isinstance(self.skip_lags, bool) or not isinstance(self.skip_lags, int) \
                or self.skip_lags < 0:
            raise ValueError(f"skip_lags must be an int >= 0 (0: no linear skip), got "
                             f"{self.skip_lags!r}")
        if not isinstance(self.relative, bool):
            raise TypeError(f"relative must be a bool, got {self.relative!r}")
        if not isinstance(self.window_norm, bool):
            raise TypeError(f"window_norm must be a bool, got {self.window_norm!r}")
        if self.skip_lags and self.mode != "direct":
            raise ValueError("skip_lags maps the window's last values to the whole horizon at "
                             f"once: it needs mode='direct', got mode={self.mode!r}")


class Forecaster(ConfigurableModel):
    """Series window (B, T, input_size) -> forecast (B, horizon, output_size).

    Inputs and outputs are in the series' own units: the model standardises with the
    per-feature mean and standard deviation set by :meth:`fit_scaler` (from the training
    split only), which are buffers and so travel in its state_dict. :meth:`loss`
    compares in standardised units, so features of different scales weigh alike.
    """

    config_class = ForecasterConfig

    def __init__(self, config: ForecasterConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = self.make_config(config, **kwargs)
        self.rnn = config.rnn.make_layer(config.input_size)
        out = config.output_size * (config.horizon if config.mode == "direct" else 1)
        self.head = nn.Linear(config.rnn.output_size, out)
        # (B, F, lags) -> (B, F, horizon)
        self.skip = nn.Linear(config.skip_lags, config.horizon) if config.skip_lags else None
        self.register_buffer("mean", torch.zeros(config.input_size))
        self.register_buffer("std", torch.ones(config.input_size))

    def fit_scaler(self, train_values: Tensor):
        """Set the scaling from training values (N, input_size) or (B, T, input_size)."""
        n = self.config.input_size
        if not isinstance(train_values, Tensor) or train_values.dim() not in (2, 3) \
                or train_values.shape[-1] != n or not train_values.is_floating_point() \
                or train_values.numel() == 0:
            got = f"shape {tuple(train_values.shape)} and dtype {train_values.dtype}" \
                if isinstance(train_values, Tensor) else type(train_values).__name__
            raise ValueError(f"train_values must be non-empty floats of shape (N, {n}) or "
                             f"(B, T, {n}), got {got}")
        v = train_values.reshape(-1, n).to(self.mean)
        if not bool(v.isfinite().all()):
            raise ValueError("train_values must hold finite values only (fill missing "
                             "values first), got NaN or infinity")
        self.mean.copy_(v.mean(0))
        self.std.copy_(v.std(0).clamp_min(1e-8))  # a constant feature: do not divide by 0
        return self

    @torch.no_grad()
    def fit_skip(self, x: Tensor, target: Tensor, *, ridge: float = 10.0):
        """Start the linear skip at the ridge least-squares direct forecast from training
        windows ``x`` (B, T, input_size) to ``target`` (B, horizon, output_size), in the
        model's scaled (and, with ``relative``, offset) units, and the recurrent head at
        zero: the model starts as that linear forecast and its recurrence learns what the
        linear one misses (a random start of both would have them fight). Call after
        :meth:`fit_scaler`; the intercept is not penalised."""
        c = self.config
        if self.skip is None or c.mode != "direct":
            raise ValueError("fit_skip needs a direct forecaster with skip_lags > 0")
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise ValueError(f"ridge must be a number >= 0, got {ridge!r}")
        scaled = self._scale(x.to(self.mean), c.input_size)
        offset, spread = (v[..., :c.output_size] for v in self._window_frame(scaled))
        lags = (scaled[:, -c.skip_lags:, :c.output_size] - offset) / spread  # (B, lags, F)
        lags = lags.transpose(1, 2).reshape(-1, c.skip_lags)  # one row per feature
        y = ((self.scale_targets(target.to(self.mean)) - offset) / spread).transpose(1, 2)
        y = y.reshape(-1, c.horizon)
        X = torch.cat([lags, torch.ones(len(lags), 1, dtype=lags.dtype)], 1).double()
        penalty = ridge * torch.eye(X.shape[1], dtype=X.dtype)
        penalty[-1, -1] = 0
        W = torch.linalg.solve(X.T @ X + penalty, X.T @ y.double())  # (lags + 1, horizon)
        self.skip.weight.copy_(W[:-1].T)
        self.skip.bias.copy_(W[-1])
        self.head.weight.zero_()
        self.head.bias.zero_()
        return self

    def _window_frame(self, scaled: Tensor) -> tuple[Tensor, Tensor]:
        """Each window's (offset, spread), both (B, 1, input_size): the network reads
        (scaled - offset) / spread, and its forecast is mapped back the same way."""
        c = self.config
        if c.relative:
            offset = scaled[:, -1:]
        elif c.window_norm:
            offset = scaled.mean(1, keepdim=True)
        else:
            offset = torch.zeros_like(scaled[:, -1:])
        if not c.window_norm:
            return offset, torch.ones_like(offset)
        # a flat window has no spread: it reads as zeros and forecasts its offset
        spread = (scaled - offset).square().mean(1, keepdim=True).sqrt().clamp_min(1e-5)
        return offset, spread

    def _scale(self, x: Tensor, n: int) -> Tensor:
        return (x - self.mean[:n]) / self.std[:n]

    def _unscale(self, y: Tensor) -> Tensor:
        n = self.config.output_size
        return y * self.std[:n] + self.mean[:n]

    def forward(self, x: Tensor, *, scaled_output: bool = False) -> Tensor:
        """Forecast the next ``horizon`` steps after each window of ``x``."""
        check_inputs(x, None, tokens=False, input_size=self.config.input_size)
        c = self.config
        if c.skip_lags and x.shape[1] < c.skip_lags:
            raise ValueError(f"x must have at least skip_lags={c.skip_lags} steps for the "
                             f"linear skip, got shape {tuple(x.shape)}")
        # (B, 1, F): with ``relative`` or ``window_norm``, everything in between is in
        # the window's own frame
        scaled = self._scale(x, c.input_size)
        offset, spread = self._window_frame(scaled)
        scaled = (scaled - offset) / spread
        out, state = self.rnn(scaled)  # (B, T, D*H)
        if c.mode == "direct":
            y = self.head(out[:, -1]).view(x.shape[0], c.horizon, c.output_size)
            if self.skip is not None:
                lags = scaled[:, -c.skip_lags:, :c.output_size].transpose(1, 2)  # (B, F, lags)
                y = y + self.skip(lags).transpose(1, 2)  # (B, horizon, F)
        else:
            preds, y_t = [], self.head(out[:, -1])  # (B, F): the next step
            for _ in range(c.horizon):
                preds.append(y_t)
                if len(preds) < c.horizon:
                    out, state = self.rnn(y_t.unsqueeze(1), state)
                    y_t = self.head(out[:, 0])
            y = torch.stack(preds, 1)
        y = y * spread[..., :c.output_size] + offset[..., :c.output_size]
        return y if scaled_output else self._unscale(y)

    def scale_targets(self, target: Tensor) -> Tensor:
        """Targets (B, horizon, output_size) in the standardised units of the outputs."""
        return self._scale(target, self.config.output_size)

    def loss(self, x: Tensor, target: Tensor) -> Tensor:
        """Mean squared error in standardised units; target (B, horizon, output_size)."""
        pred = self(x, scaled_output=True)  # (B, horizon, output_size)
        if not isinstance(target, Tensor) or target.shape != pred.shape:
            got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(f"target must have shape (batch, horizon, output_size) = "
                             f"{tuple(pred.shape)}, got {got}")
        return F.mse_loss(pred, self.scale_targets(target))

    def step(self, x_t: Tensor, state=None):
        """Read one step (B, input_size); return the forecast of the next step
        (B, output_size) in the series' units and the new state."""
        c = self.config
        check_streaming(c.rnn, "Forecaster")
        whole_window = [f"{name}={value}" for name, value in (
            ("skip_lags", c.skip_lags), ("relative", c.relative),
            ("window_norm", c.window_norm)) if value]
        if whole_window:
            raise ValueError(f"Forecaster.step reads one step at a time, but "
                             f"{whole_window[0]} needs the whole window: call the model on "
                             "the window instead")
        check_inputs(x_t, None, tokens=False, name="x_t", input_size=c.input_size, step=True)
        out, state = self.rnn(self._scale(x_t, c.input_size).unsqueeze(1), state)
        y = self.head(out[:, 0])[:, :c.output_size]  # direct: the first future step
        return self._unscale(y), state
