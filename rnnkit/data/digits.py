"""Handwritten digits as sequences: scikit-learn's bundled 8x8 digits (1797 images, no
download), read row by row or pixel by pixel, the small cousin of sequential MNIST."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnkit.data._checks import check_fraction

__all__ = ["DigitSequences", "digit_sequences", "shift_images", "MODES", "PERMUTATION_SEED"]

MODES = ("rows", "pixels", "permuted")
#: Seed of the one fixed pixel permutation of ``mode="permuted"``: the same for every
#: split seed and every run, as in permuted sequential MNIST.
PERMUTATION_SEED = 1234


def pixel_permutation() -> Tensor:
    """(64,) int64: the fixed permutation of ``mode="permuted"`` (from PERMUTATION_SEED)."""
    return torch.randperm(64, generator=torch.Generator().manual_seed(PERMUTATION_SEED))


def shift_images(images: Tensor, shift: Tensor) -> Tensor:
    """``images`` (n, H, W) moved by ``shift`` (n, 2) int64 pixels (down, right; negative:
    up, left), with zeros (blank paper) moved in at the edges."""
    n, height, width = images.shape
    most = int(shift.abs().max()) if n else 0
    padded = torch.nn.functional.pad(images, (most, most, most, most))
    rows = (most - shift[:, 0, None] + torch.arange(height))[:, :, None].expand(n, height, width)
    cols = (most - shift[:, 1, None] + torch.arange(width))[:, None, :].expand(n, height, width)
    return padded[torch.arange(n)[:, None, None], rows, cols]


@dataclass
class DigitSequences:
    """Train, validation and test splits of the digits, as sequences.

    Attributes:
        x_train, x_val, x_test: (n, T, F) float32 in [0, 1]; T, F = 8, 8 for ``rows``
            and 64, 1 for ``pixels`` and ``permuted``.
        y_train, y_val, y_test: (n,) int64 labels in 0 .. 9.
        mode: ``"rows"``, ``"pixels"`` or ``"permuted"``.
        permutation: (64,) the pixel order for ``permuted``, else None.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    mode: str
    permutation: Tensor | None = None
    n_classes: int = 10

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} must be (n, T, F) and y_{split} (n,), got "
                                 f"{tuple(x.shape)} and {tuple(y.shape)}")

    @property
    def n_steps(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[2]

    def shifted(self, x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
        """Sequences ``x`` (n, T, F) of this mode whose images are each moved by up to
        ``max_shift`` pixels in each direction, drawn uniformly from ``generator``: the
        classic augmentation of handwritten digits (a stroke a pixel over is the same
        digit)."""
        flat = x.reshape(len(x), 64)
        if self.permutation is not None:  # back to row-major pixel order
            flat = flat[:, torch.argsort(self.permutation)]
        shift = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=generator)
        moved = shift_images(flat.view(-1, 8, 8), shift).reshape(len(x), 64)
        if self.permutation is not None:
            moved = moved[:, self.permutation]
        return moved.view(x.shape)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0  # (1797, 64), 0..16 -> [0, 1]
    y = torch.as_tensor(digits.target, dtype=torch.long)          # (1797,)
    return x, y


def _split_indices(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified split of positions 0 .. len(y)-1 into (rest, held out)."""
    positions = torch.arange(len(y))
    if fraction == 0:
        return positions, positions[:0]
    from sklearn.model_selection import train_test_split
    rest, held = train_test_split(positions.numpy(), test_size=fraction, random_state=seed,
                                  stratify=y.numpy())
    return torch.as_tensor(rest), torch.as_tensor(held)


def digit_sequences(mode: str = "rows", *, split_seed: int = 0, test_fraction: float = 0.2,
                    val_fraction: float = 0.1) -> DigitSequences:
    """The 8x8 digits as sequences for a classifier, split by class-stratified sampling.

    Args:
        mode: ``"rows"``: 8 steps of 8 pixels (one image row per step). ``"pixels"``:
            64 steps of 1 pixel, row-major: the long-dependency version. ``"permuted"``:
            64 steps of 1 pixel in one fixed random order (:data:`PERMUTATION_SEED`),
            which scatters neighbouring pixels far apart in time.
        split_seed: seed of the train/val/test split (the data itself never changes).
        test_fraction: share of all images held out for test.
        val_fraction: share of all images held out for validation.

    Example:
        >>> data = digit_sequences("rows")
        >>> data.x_train.shape[1:], data.y_train.dtype
        (torch.Size([8, 8]), torch.int64)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative int, got {split_seed!r}")
    test_fraction = check_fraction("test_fraction", test_fraction)
    val_fraction = check_fraction("val_fraction", val_fraction)
    if test_fraction + val_fraction >= 0.9:
        raise ValueError(f"test_fraction + val_fraction must leave at least 10% for "
                         f"training, got {test_fraction} + {val_fraction}")
    x, y = _load()
    permutation = None
    if mode == "rows":
        x = x.view(-1, 8, 8)                                 # (N, 8 rows, 8 pixels)
    else:
        if mode == "permuted":
            permutation = pixel_permutation()
            x = x[:, permutation]
        x = x.unsqueeze(-1)                                  # (N, 64, 1)
    rest, test = _split_indices(y, test_fraction, split_seed)
    # val_fraction is a share of all images, so rescale it to the share of what is left.
    keep, val = _split_indices(y[rest], val_fraction / (1 - test_fraction), split_seed)
    train, val = rest[keep], rest[val]
    return DigitSequences(x_train=x[train].contiguous(), y_train=y[train],
                          x_val=x[val].contiguous(), y_val=y[val],
                          x_test=x[test].contiguous(), y_test=y[test],
                          mode=mode, permutation=permutation)
