"""The simple baselines every task's result is shown beside, so that a reader sees at
once whether the recurrent model earns its keep.

Each baseline is fitted on the training split only and scored on the same validation
and test examples as the model, with the same metric. They are deliberately plain:
constant predictors, counts, linear models from scikit-learn and statsmodels.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


# -- sequences of tokens ---------------------------------------------------------------

def unigram_cross_entropy(train: Sequence[int], held_out: Sequence[int], vocab_size: int) -> float:
    """Cross-entropy in nats per token of ``held_out`` under the unigram distribution of
    ``train`` (add-one smoothed over ``vocab_size`` tokens, so an unseen token costs a
    finite amount): what a model that ignores all context scores."""
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(held_out, dtype=np.int64)].mean())


def majority_class(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy on ``labels`` of always answering the most frequent training label."""
    top = Counter(int(y) for y in train_labels).most_common(1)[0][0]
    return float(np.mean([int(y) == top for y in labels]))


def ngram_logistic_regression(train_texts: Sequence[str], train_labels: Sequence[int],
                              splits: dict[str, tuple[Sequence[str], Sequence[int]]],
                              ngrams: int = 2) -> dict[str, float]:
    """Accuracy per split of a logistic regression on word 1..``ngrams``-gram counts
    (scikit-learn), fitted on the training texts: a bag of phrases, no order beyond
    ``ngrams`` words."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(ngram_range=(1, ngrams), token_pattern=r"\S+", lowercase=False)
    features = vectorizer.fit_transform(train_texts)
    labels = np.asarray(train_labels)
    if len(set(labels.tolist())) < 2:  # one class: nothing to regress, it is always right
        return {name: float(np.mean(np.asarray(y) == labels[0])) for name, (_, y) in splits.items()}
    model = LogisticRegression(max_iter=2000).fit(features, labels)
    return {name: float(model.score(vectorizer.transform(texts), np.asarray(y)))
            for name, (texts, y) in splits.items()}


def most_frequent_tag(train: Sequence[tuple[Sequence[int], Sequence[int]]],
                      held_out: Sequence[tuple[Sequence[int], Sequence[int]]]) -> float:
    """Token accuracy on ``held_out`` (pairs of token ids and tag ids) of tagging each
    word with its most frequent training tag, and an unseen word with the most frequent
    tag overall."""
    per_word: dict[int, Counter] = {}
    overall: Counter = Counter()
    for words, tags in train:
        for w, t in zip(words, tags):
            per_word.setdefault(w, Counter())[t] += 1
            overall[t] += 1
    fallback = overall.most_common(1)[0][0]
    best = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
    hits = [best.get(w, fallback) == t for words, tags in held_out for w, t in zip(words, tags)]
    return float(np.mean(hits))


def copy_source(pairs: Sequence[tuple[str, str]]) -> float:
    """Exact match of answering every source with itself (a translation that is the
    identity)."""
    return float(np.mean([source == target for source, target in pairs]))


#: flat_classifiers' results in this process, by a digest of their data: the MLP takes
#: seconds to fit, and the same images come back (rows and pixels flatten alike)
_FLAT_RESULTS: dict[str, dict] = {}


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def flat_classifier_models() -> dict:
    """The flat-pixel baselines, unfitted, by name: scikit-learn's logistic regression
    and a one-hidden-layer MLP (fixed seed). :func:`flat_classifiers` fits and scores
    them; benchmarks/digits_mcnemar.py fits the same ones to compare their answers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {"logistic_regression": LogisticRegression(max_iter=5000),
            "mlp": MLPClassifier(hidden_layer_sizes=(100,), max_iter=1000, random_state=0)}


def flat_classifiers(x_train: Tensor, y_train: Tensor,
                     splits: dict[str, tuple[Tensor, Tensor]]) -> dict[str, dict[str, float]]:
    """Accuracy per split of scikit-learn's logistic regression and a one-hidden-layer
    MLP on the flattened sequences (every step's features side by side: no notion of
    order, all of the input at once). Deterministic (fixed seeds), so a second call with
    the same data in the same process returns the first call's result."""
    def flat(x):
        return x.reshape(len(x), -1).numpy()

    key = _digest(x_train.reshape(len(x_train), -1), y_train,
                  *(t.reshape(len(t), -1) for pair in splits.values() for t in pair)) + \
        "|" + ",".join(splits)
    if key in _FLAT_RESULTS:
        return copy.deepcopy(_FLAT_RESULTS[key])
    out = {}
    for name, model in flat_classifier_models().items():
        model.fit(flat(x_train), y_train.numpy())
        out[name] = {split: float(model.score(flat(x), y.numpy()))
                     for split, (x, y) in splits.items()}
    _FLAT_RESULTS[key] = copy.deepcopy(out)
    return out


# -- series ------------------------------------------------------------------------------

def persistence(x: Tensor, horizon: int) -> Tensor:
    """Forecast (B, horizon, F): every future step equals the window's last value."""
    return x[:, -1:].expand(-1, horizon, -1)


def seasonal_naive(x: Tensor, horizon: int, period: int) -> Tensor:
    """Forecast (B, horizon, F): step h repeats the value one cycle (``period`` steps)
    before it, from the window's last observed cycle."""
    if not 1 <= period <= x.shape[1]:
        raise ValueError(f"period must be in [1, window={x.shape[1]}], got {period}")
    cycle = x[:, -period:]  # (B, period, F)
    return cycle[:, torch.arange(horizon) % period]


def seasonal_period(train: Tensor, max_period: int) -> int:
    """The lag in [2, max_period] of the highest autocorrelation of the training series'
    first differences (the mean over features): the cycle of a seasonal series, from the
    data. Differencing first keeps a trend, whose autocorrelation is highest at the
    shortest lags, from hiding the cycle."""
    from statsmodels.tsa.stattools import acf

    v = np.diff(train.double().numpy(), axis=0)
    max_period = max(2, min(max_period, len(v) // 2))
    scores = np.mean([acf(v[:, f], nlags=max_period, fft=True)[2:] for f in range(v.shape[1])], 0)
    return int(np.argmax(scores)) + 2


def autoreg_order(train: Tensor, max_lag: int) -> list[int]:
    """Per feature, the AutoReg order in [1, max_lag] with the lowest AIC on the training
    series (statsmodels' ar_select_order; all orders fitted on the same sample)."""
    from statsmodels.tsa.ar_model import ar_select_order

    v = train.double().numpy()
    max_lag = max(1, min(max_lag, len(v) // 3))
    orders = []
    for f in range(v.shape[1]):
        lags = ar_select_order(v[:, f], maxlag=max_lag, ic="aic", trend="c").ar_lags
        orders.append(max(lags) if lags else 1)  # a white-noise series: AR(1) is near it
    return orders


def autoreg(train: Tensor, x: Tensor, horizon: int, orders: Sequence[int]) -> Tensor:
    """Forecast (B, horizon, F): per feature, statsmodels' AutoReg of that order with a
    constant, fitted by least squares on the training series, iterated ``horizon`` steps
    from the end of each window (each forecast fed back as the next lag), as AutoReg's
    own dynamic prediction does."""
    from statsmodels.tsa.ar_model import AutoReg

    v = train.double().numpy()
    windows = x.double().numpy()  # (B, W, F)
    out = np.empty((windows.shape[0], horizon, windows.shape[2]))
    for f, p in enumerate(orders):
        if p > windows.shape[1]:
            raise ValueError(f"order {p} needs more than the window's {windows.shape[1]} steps")
        params = AutoReg(v[:, f], lags=p, trend="c").fit().params  # const, a_1 .. a_p
        history = windows[:, -p:, f].copy()  # (B, p), oldest first
        for h in range(horizon):
            y = params[0] + history[:, ::-1] @ params[1:]  # a_1 multiplies the newest lag
            out[:, h, f] = y
            history = np.concatenate([history[:, 1:], y[:, None]], 1)
    return torch.from_numpy(out).to(x.dtype)


def forecast_errors(pred: Tensor, target: Tensor, std: Tensor) -> dict[str, float]:
    """The forecaster's metrics: ``loss``, the MSE in standardised units (each feature
    divided by its training standard deviation), and ``mse`` in the series' own units;
    both averaged over windows, horizon steps and features."""
    err = pred.double() - target.double()
    return {"loss": float(((err / std.double()) ** 2).mean()), "mse": float((err ** 2).mean())}


def constant_mse(targets: Tensor, value: float) -> float:
    """MSE of predicting ``value`` for every target."""
    return float(((targets.double() - value) ** 2).mean())


def memoryless_copy(y: Tensor, length: int, n_symbols: int) -> dict[str, float]:
    """The copy task's baseline: a predictor that knows where it is but remembers
    nothing writes blanks until the delimiter, then a uniform guess at each of the
    ``length`` recalled symbols. Cross-entropy in nats per step (``length * ln
    n_symbols / T``) and recall accuracy (1 / n_symbols), measured on targets ``y``."""
    T = y.shape[1]
    recall_ok = bool((y[:, -length:] > 0).all()) and bool((y[:, :-length] == 0).all())
    if not recall_ok:
        raise ValueError("y is not copy-task targets: blanks, then `length` symbols")
    return {"loss": length * math.log(n_symbols) / T, "accuracy": 1.0 / n_symbols}
