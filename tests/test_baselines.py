"""The baselines every result is shown beside, each against a direct computation on a toy
case."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit import data as D
from rnnkit.train import baselines as B


def test_unigram_cross_entropy_is_the_smoothed_unigram_log_loss():
    train, held = [0, 0, 1, 2, 0], [0, 1, 3]
    p = np.array([3 + 1, 1 + 1, 1 + 1, 0 + 1]) / (5 + 4)  # add-one over 4 tokens
    expected = -np.mean(np.log(p[held]))
    assert B.unigram_cross_entropy(train, held, 4) == pytest.approx(expected, rel=1e-12)


def test_majority_class():
    assert B.majority_class([1, 1, 0], [1, 0, 0, 0]) == 0.25


def test_most_frequent_tag_per_word_and_overall_for_unseen_words():
    train = [([1, 2, 1], [5, 6, 5]), ([1, 3, 4], [7, 6, 6])]  # word 1: 5 twice, 7 once
    held = [([1, 2, 3, 9], [5, 6, 6, 6])]  # 9 is unseen: the most frequent tag overall, 6
    assert B.most_frequent_tag(train, held) == 1.0
    assert B.most_frequent_tag(train, [([1, 9], [7, 5])]) == 0.0


def test_copy_source():
    assert B.copy_source([("a", "a"), ("b", "c"), ("x", "x"), ("", "y")]) == 0.5


def test_ngram_logistic_regression_reads_phrases():
    # unigrams alone cannot tell "not good" from "good not": bigrams can
    texts = ["not good", "good not", "very good", "good very"] * 10
    labels = [0, 1, 1, 0] * 10
    scores = B.ngram_logistic_regression(texts, labels, {"validation": (texts, labels)})
    assert scores["validation"] == 1.0
    unigrams = B.ngram_logistic_regression(texts, labels, {"validation": (texts, labels)},
                                           ngrams=1)
    assert unigrams["validation"] == 0.5


def test_flat_classifiers_are_scikit_learns_on_the_flattened_sequences():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, 2, generator=g)
    y = (x[:, 0, 1] + x[:, 2, 0] > 0).long()  # depends on two steps
    scores = B.flat_classifiers(x[:40], y[:40], {"test": (x[40:], y[40:])})
    direct = LogisticRegression(max_iter=5000).fit(x[:40].reshape(40, 6).numpy(), y[:40].numpy())
    assert scores["logistic_regression"]["test"] == direct.score(x[40:].reshape(20, 6).numpy(),
                                                                 y[40:].numpy())
    assert 0 <= scores["mlp"]["test"] <= 1


def test_flat_classifiers_fit_once_per_data(monkeypatch):
    from sklearn.neural_network import MLPClassifier

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 4, 2, generator=g), torch.randint(0, 2, (50,), generator=g)
    first = B.flat_classifiers(x[:30], y[:30], {"test": (x[30:], y[30:])})
    fits = []
    monkeypatch.setattr(MLPClassifier, "fit", lambda self, *a: fits.append(1) or self)
    # the same images as (8, 1) steps instead of (4, 2): the same flat data, no refit
    assert B.flat_classifiers(x[:30].reshape(30, 8, 1), y[:30],
                              {"test": (x[30:], y[30:])}) == first
    assert not fits
    with pytest.raises(Exception):  # other data is fitted again (here by the stub)
        B.flat_classifiers(x[:30] + 1, y[:30], {"test": (x[30:], y[30:])})
    assert fits


def test_memoryless_copy_is_the_cross_entropy_of_the_memoryless_predictor():
    _, y = D.copy_memory(50, 100, n_symbols=8, length=10, seed=3)
    got = B.memoryless_copy(y, 10, 8)
    assert got["loss"] == pytest.approx(10 * math.log(8) / 120, rel=1e-12)  # the formula
    # the predictor itself: certain of a blank before the recall, uniform during it
    logits = torch.full((50, 120, 10), -1e9)
    logits[:, :-10, 0] = 0.0
    logits[:, -10:, 1:9] = 0.0
    assert F.cross_entropy(logits.flatten(0, 1), y.flatten()).item() == pytest.approx(
        got["loss"], rel=1e-6)
    assert got["accuracy"] == 1 / 8
    with pytest.raises(ValueError, match="copy-task targets"):
        B.memoryless_copy(torch.zeros(2, 30, dtype=torch.long), 10, 8)


def test_constant_mse():
    assert B.constant_mse(torch.tensor([0.0, 2.0]), 1.0) == 1.0


def test_persistence_and_seasonal_naive():
    x = torch.arange(12.0).view(1, 12, 1)  # 0 .. 11
    assert B.persistence(x, 3).flatten().tolist() == [11.0, 11.0, 11.0]
    # a cycle of 4: the next 6 steps repeat 8, 9, 10, 11 from the start
    assert B.seasonal_naive(x, 6, 4).flatten().tolist() == [8.0, 9.0, 10.0, 11.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="period"):
        B.seasonal_naive(x, 3, 13)


def test_seasonal_period_finds_the_cycle():
    t = torch.arange(300.0)
    g = torch.Generator().manual_seed(0)
    series = (torch.sin(2 * math.pi * t / 11) + 0.1 * torch.randn(300, generator=g)).unsqueeze(1)
    assert B.seasonal_period(series, 30) == 11


def _ar2_series(n=400, seed=0):
    rng = np.random.default_rng(seed)
    v = np.zeros(n)
    for t in range(2, n):
        v[t] = 0.5 + 0.6 * v[t - 1] - 0.3 * v[t - 2] + rng.normal()
    return torch.from_numpy(v).unsqueeze(1)


def test_autoreg_order_is_statsmodels_choice():
    from statsmodels.tsa.ar_model import ar_select_order

    series = _ar2_series()
    direct = ar_select_order(series[:, 0].numpy(), maxlag=10, ic="aic", trend="c").ar_lags
    assert B.autoreg_order(series, 10) == [max(direct)]


def test_autoreg_forecasts_are_statsmodels_dynamic_predictions():
    from statsmodels.tsa.ar_model import AutoReg

    series = _ar2_series()
    res = AutoReg(series[:, 0].numpy(), lags=3, trend="c").fit()
    W, h = 20, 5
    starts = [10, 100, 300]
    x = torch.stack([series[s:s + W] for s in starts])  # (3, W, 1)
    got = B.autoreg(series, x, h, [3])
    for row, s in enumerate(starts):
        # forecasting from the window's end with forecasts fed back, as AutoReg does
        expected = res.predict(start=s + W, end=s + W + h - 1, dynamic=True)
        np.testing.assert_allclose(got[row, :, 0].numpy(), expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="order 30"):
        B.autoreg(series, x, h, [30])


def test_forecast_errors_in_standardised_and_series_units():
    pred, target = torch.tensor([[[1.0, 10.0]]]), torch.tensor([[[0.0, 0.0]]])
    got = B.forecast_errors(pred, target, torch.tensor([1.0, 10.0]))
    assert got == {"loss": 1.0, "mse": 50.5}


@pytest.mark.parametrize("relative,window_norm", [(False, False), (True, False), (False, True),
                                                  (True, True)])
def test_the_forecasters_skip_starts_at_the_ridge_fit(relative, window_norm):
    """fit_skip makes the forecaster (recurrent head at zero) predict what scikit-learn's
    Ridge fitted on the same lags predicts: per feature, the last skip_lags scaled values
    (relative to the window's last one or mean, in units of its spread) to the horizon's
    scaled targets in the same frame."""
    from sklearn.linear_model import Ridge

    from rnnkit.models import Forecaster

    g = torch.Generator().manual_seed(0)
    series = torch.randn(300, 2, generator=g).cumsum(0) * 0.3 + torch.randn(300, 2, generator=g)
    x = torch.stack([series[i:i + 10] for i in range(280)])
    y = torch.stack([series[i + 10:i + 13] for i in range(280)])
    model = Forecaster(input_size=2, horizon=3, skip_lags=4, relative=relative,
                       window_norm=window_norm, hidden_size=5).fit_scaler(series)
    model.fit_skip(x, y, ridge=3.0)
    scaled = (x - model.mean) / model.std
    target = (y - model.mean) / model.std
    offset = scaled[:, -1:] if relative else scaled.mean(1, keepdim=True) if window_norm \
        else torch.zeros_like(scaled[:, -1:])
    # the root mean square around the offset
    spread = (scaled - offset).square().mean(1, keepdim=True).sqrt() if window_norm else 1.0
    lags = ((scaled[:, -4:] - offset) / spread).transpose(1, 2).reshape(-1, 4).numpy()
    goal = ((target - offset) / spread).transpose(1, 2).reshape(-1, 3).numpy()
    ridge = Ridge(alpha=3.0).fit(lags, goal)
    expected = torch.from_numpy(ridge.predict(lags)).float().reshape(280, 2, 3).transpose(1, 2)
    with torch.no_grad():
        got = (model(x, scaled_output=True) - offset) / spread
    assert torch.allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="direct forecaster with skip_lags > 0"):
        Forecaster(input_size=2, horizon=3, hidden_size=5).fit_skip(x, y)


def test_forecast_recipes_per_series():
    from rnnkit.train.tasks import recipe

    sunspots = recipe("forecast")
    assert sunspots["window_norm"] and "skip_lags" not in sunspots and sunspots["seq_len"] == 24
    assert recipe("forecast", {"data": "co2"})["skip_lags"] == 52
    assert "skip_lags" not in recipe("forecast", {"data": "nile"})
    assert not recipe("forecast", {"data": "nile"}).get("window_norm")
    # a shorter window caps the skip
    assert recipe("forecast", {"data": "co2", "seq_len": 8})["skip_lags"] == 8
