"""Time series: CSV reading, the series statsmodels bundles, time-ordered splits, scaling
and sliding windows for forecasting.

The order of work that keeps the future out of training::

    values, index, names = load_bundled("sunspots")      # (T, F)
    train, val, test = time_split(values)                # in time order, no overlap
    scaler = Scaler.fit(train)                           # statistics of train only
    x, y = windows(scaler.transform(train), 24, 1)       # windows never cross a split
"""

from __future__ import annotations

import csv
import importlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rnnkit.data._checks import check_fraction, check_int, check_path, read_utf8

__all__ = ["read_csv_series", "load_bundled", "BUNDLED", "time_split", "Splits", "Scaler",
           "windows"]

#: Names accepted by :func:`load_bundled`.
BUNDLED = ("co2", "elnino", "nile", "sunspots")


def _number(cell: str) -> float | None:
    """``cell`` as a finite float, or None when it is not one (missing, text, nan)."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv_series(path, columns: Sequence[str] | None = None,
                    index_column: str | None = None, *,
                    delimiter: str = ",") -> tuple[Tensor, list, list[str]]:
    """Read a multivariate series from a CSV file with a header row.

    Args:
        path: the CSV file (UTF-8).
        columns: names of the value columns, in the order wanted. Default: every
            column except ``index_column`` whose first non-empty cell is a number (so
            date and label columns are left out, and numeric columns with a bad cell
            further down raise instead of vanishing).
        index_column: name of the column that labels the rows (dates, years...); its
            cells are returned as strings. Default: none, the index is 0 .. T-1.
        delimiter: the field separator.

    Returns:
        values: (T, F) float32, one row per data row.
        index: T labels, strings from ``index_column`` or ints 0 .. T-1.
        names: the F column names.

    Raises:
        ValueError: the file is empty or has no data rows; a named column does not
            exist; a row has the wrong number of cells; a value is missing or is not a
            number (naming the line, 1-based with the header as line 1, and the column).
            Fill or drop missing values before reading.
    """
    path = check_path("path", path)
    if columns is not None and (isinstance(columns, str) or not all(
            isinstance(c, str) for c in columns)):
        raise TypeError(f"columns must be a list of column names, got {columns!r}")
    if index_column is not None and not isinstance(index_column, str):
        raise TypeError(f"index_column must be a column name (str), got {index_column!r}")
    text = read_utf8(path)
    if not text.strip():
        raise ValueError(f"CSV file {path} is empty")
    # (line number, cells), skipping blank lines but keeping the file's numbering.
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = []
    try:
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except csv.Error as e:  # e.g. a cell beyond csv's field limit: not a number anyway
        raise ValueError(f"{path}, line {reader.line_num}: not readable as CSV "
                         f"({e})") from None
    if not rows:
        raise ValueError(f"CSV file {path} has no cells: only separators and blank lines")
    header_line, header = rows[0]
    data = rows[1:]
    if not data:
        raise ValueError(f"CSV file {path} has a header but no data rows")
    if len(set(header)) != len(header):
        raise ValueError(f"CSV file {path} has duplicate column names in its header: {header}")
    for line, cells in data:
        if len(cells) != len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} cells as in the "
                             f"header, got {len(cells)}")
    if index_column is not None and index_column not in header:
        raise ValueError(f"index_column {index_column!r} is not a column of {path}; "
                         f"columns are {header}")
    if columns is None:
        def numeric(j: int) -> bool:
            first = next((cells[j] for _, cells in data if cells[j]), "")
            return _number(first) is not None
        names = [name for j, name in enumerate(header) if name != index_column and numeric(j)]
        if not names:
            raise ValueError(f"CSV file {path} has no numeric column (columns: {header})")
    else:
        names = list(columns)
        if not names:
            raise ValueError("columns must name at least one column, got an empty list")
        unknown = [name for name in names if name not in header]
        if unknown:
            raise ValueError(f"columns {unknown} are not columns of {path}; columns are "
                             f"{header}")
        if index_column in names:
            raise ValueError(f"index_column {index_column!r} cannot also be a value column")
    positions = [header.index(name) for name in names]
    values = torch.empty(len(data), len(names), dtype=torch.float64)  # (T, F)
    for t, (line, cells) in enumerate(data):
        for f, j in enumerate(positions):
            value = _number(cells[j])
            if value is None:
                what = "a missing value" if cells[j] in ("", "NA", "NaN", "nan", "null") \
                    else f"{cells[j]!r}, not a finite number"
                raise ValueError(f"{path}, line {line}, column {header[j]!r}: {what}")
            values[t, f] = value
    if index_column is None:
        index = list(range(len(data)))
    else:
        j = header.index(index_column)
        index = [cells[j] for _, cells in data]
    single = values.float()
    if not bool(single.isfinite().all()):  # finite in float64, beyond float32's range
        t, f = (~single.isfinite()).nonzero()[0].tolist()
        raise ValueError(f"{path}, line {data[t][0]}, column {names[f]!r}: "
                         f"{values[t, f].item():g} is beyond float32's range (about ±3.4e38)")
    return single, index, names


def load_bundled(name: str) -> tuple[Tensor, list, list[str]]:
    """A time series that statsmodels ships (no download), as ``(values, index, names)``
    like :func:`read_csv_series`.

    - ``"sunspots"``: yearly sunspot activity 1700-2008 (309 steps; SUNACTIVITY).
    - ``"co2"``: weekly atmospheric CO2 at Mauna Loa, 1958-2001 (2284 steps). The 59
      missing weeks are filled by linear interpolation between their neighbours.
    - ``"nile"``: yearly Nile flow at Aswan, 1871-1970 (100 steps; volume).
    - ``"elnino"``: monthly sea surface temperature of the El Nino region, 1950-2010,
      the year-by-month table flattened to one series (732 steps; index "YYYY-MM").

    Index labels are ints (years) or "YYYY-MM-DD" / "YYYY-MM" strings.
    """
    if name not in BUNDLED:
        raise ValueError(f"name must be one of the bundled series {BUNDLED}, got {name!r}")
    frame = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data
    if name == "sunspots":
        values, index, names = frame[["SUNACTIVITY"]], frame["YEAR"].astype(int).tolist(), \
            ["SUNACTIVITY"]
    elif name == "nile":
        values, index, names = frame[["volume"]], frame["year"].astype(int).tolist(), ["volume"]
    elif name == "co2":
        # Interpolate on the time axis position (the weeks are evenly spaced).
        values = frame[["co2"]].interpolate(method="linear", limit_direction="both")
        index, names = [d.strftime("%Y-%m-%d") for d in frame.index], ["co2"]
    else:  # elnino: one row per year, one column per month
        months = [c for c in frame.columns if c != "YEAR"]
        # copy=True: statsmodels hands out read-only arrays, which torch warns about.
        table = torch.from_numpy(frame[months].to_numpy(dtype="float32", copy=True))  # (years, 12)
        index = [f"{int(year)}-{m:02d}" for year in frame["YEAR"] for m in range(1, 13)]
        return table.reshape(-1, 1), index, ["temperature"]                       # (T, 1)
    return torch.from_numpy(values.to_numpy(dtype="float32", copy=True)), index, names


def trends(values: Tensor, alpha: float = 0.05) -> bool:
    """Whether any feature of a series (T, F) looks non-stationary: the augmented
    Dickey-Fuller test (statsmodels' ``adfuller``, lag order by AIC) cannot reject a unit
    root at level ``alpha``. Such a series (a trend, a random walk) leaves the range
    of its own past, which a model fitted on that past has never seen."""
    import warnings

    from statsmodels.tsa.stattools import adfuller

    v = _as_series("values", values).double().numpy()
    with warnings.catch_warnings():  # statsmodels announces a change of its return type
        warnings.simplefilter("ignore", FutureWarning)
        return any(adfuller(v[:, f], autolag="AIC")[1] >= alpha for f in range(v.shape[1]))


class Splits(NamedTuple):
    """Train, validation and test parts of a series, in time order."""
    train: Tensor
    val: Tensor
    test: Tensor


def time_split(values: Tensor | Sequence, val_fraction: float = 0.15,
               test_fraction: float = 0.15) -> Splits:
    """Cut a series along time (dimension 0) into train, then validation, then test.

    No shuffling and no overlap: every training step precedes every validation step,
    which precedes every test step. Works on tensors and on plain lists (an index).
    Each part's size is its fraction of T, rounded; a non-zero fraction gets at least
    one step.
    """
    if not isinstance(values, (Tensor, Sequence)) or isinstance(values, str):
        raise TypeError(f"values must be a tensor or a sequence, got {type(values).__name__}")
    if isinstance(values, Tensor) and values.dim() == 0:
        raise ValueError("values must have a time dimension, got a 0-d tensor")
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    T = len(values)
    n_val = max(round(T * val_fraction), 1) if val_fraction else 0
    n_test = max(round(T * test_fraction), 1) if test_fraction else 0
    n_train = T - n_val - n_test
    if n_train < 1:
        raise ValueError(f"values has {T} steps: too few for val_fraction={val_fraction} "
                         f"and test_fraction={test_fraction} to leave a training part")
    return Splits(values[:n_train], values[n_train:n_train + n_val], values[n_train + n_val:])


def _as_series(name: str, values) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(values).__name__}")
    if values.dim() not in (1, 2) or not values.dtype.is_floating_point:
        raise ValueError(f"{name} must be a (T, F) or (T,) float tensor, got shape "
                         f"{tuple(values.shape)} and dtype {values.dtype}")
    return values if values.dim() == 2 else values.unsqueeze(-1)  # (T, F)


@dataclass(eq=False)
class Scaler:
    """Per-feature standardisation, ``(x - mean) / std``.

    Fit it on the training split only (:meth:`fit`), so no statistic of the validation
    or test future leaks into training; save it with the model (:meth:`to_dict`) to
    turn predictions back into the original units.

    Args:
        mean: (F,) per-feature mean.
        std: (F,) per-feature standard deviation, positive.
    """

    mean: Tensor
    std: Tensor

    def __post_init__(self):
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dim() != 1:
                raise ValueError(f"{name} must be a 1-D tensor (F,), got {value!r:.80}")
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean and std must have the same shape, got "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be positive, got {self.std.tolist()}")

    @classmethod
    def fit(cls, train: Tensor) -> "Scaler":
        """Mean and (population) std of each feature of ``train`` (T, F) or (T,); a
        constant feature gets std 1, so it maps to 0 instead of dividing by zero."""
        train = _as_series("train", train).double()
        if train.shape[0] < 1:
            raise ValueError("train must have at least one step, got 0")
        if not bool(train.isfinite().all()):
            raise ValueError("train must hold finite values only (fill missing values "
                             "first), got NaN or infinity")
        mean = train.mean(0)                                   # (F,)
        std = train.std(0, correction=0)                       # (F,)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(mean=mean.float(), std=std.float())

    @property
    def n_features(self) -> int:
        return self.mean.shape[0]

    def _check(self, name: str, values: Tensor) -> None:
        if not isinstance(values, Tensor) or not values.dtype.is_floating_point:
            raise TypeError(f"{name} must be a float tensor, got {values!r:.80}")
        if values.dim() == 0 or values.shape[-1] != self.n_features:
            raise ValueError(f"{name} must have {self.n_features} features in its last "
                             f"dimension, got shape {tuple(values.shape)}")

    def transform(self, values: Tensor) -> Tensor:
        """Standardise ``values`` (..., F)."""
        self._check("values", values)
        return (values - self.mean.to(values)) / self.std.to(values)

    def inverse_transform(self, values: Tensor) -> Tensor:
        """Undo :meth:`transform` on ``values`` (..., F), e.g. on predictions."""
        self._check("values", values)
        return values * self.std.to(values) + self.mean.to(values)

    def to_dict(self) -> dict:
        """A plain, JSON-able dict (for checkpoints); :meth:`from_dict` inverts it."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        if not isinstance(d, dict) or not {"mean", "std"} <= d.keys():
            raise ValueError(f"d must be a dict from Scaler.to_dict with keys 'mean' and "
                             f"'std', got {d!r:.80}")
        return cls(mean=torch.tensor(d["mean"], dtype=torch.float32),
                   std=torch.tensor(d["std"], dtype=torch.float32))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Scaler):
            return NotImplemented
        return torch.equal(self.mean, other.mean) and torch.equal(self.std, other.std)


def windows(values: Tensor, input_length: int, horizon: int,
            stride: int = 1) -> tuple[Tensor, Tensor]:
    """Sliding windows for forecasting: ``input_length`` steps in, the next ``horizon``
    steps out. Build them per split, so no window crosses a split boundary.

    Args:
        values: (T, F) or (T,) float series (a 1-D series counts as F = 1).
        input_length: steps the model reads.
        horizon: steps it predicts, right after the input steps.
        stride: steps between the starts of consecutive windows.

    Returns:
        inputs: (N, input_length, F) and targets: (N, horizon, F), with
        N = (T - input_length - horizon) // stride + 1; window i starts at i * stride.
    """
    values = _as_series("values", values)                             # (T, F)
    check_int("input_length", input_length)
    check_int("horizon", horizon)
    check_int("stride", stride)
    span = input_length + horizon
    if values.shape[0] < span:
        raise ValueError(f"values has {values.shape[0]} steps, fewer than input_length + "
                         f"horizon = {span}: no window fits")
    w = values.unfold(0, span, stride).transpose(1, 2)                # (N, span, F)
    return w[:, :input_length].contiguous(), w[:, input_length:].contiguous()
