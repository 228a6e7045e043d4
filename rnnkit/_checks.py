"""The argument checks every part of rnnkit shares (private): each names the argument,
says what was expected and shows what came, in the type torch.nn would raise."""

from __future__ import annotations


def check_int(name: str, value, *, minimum: int = 1, maximum: int | None = None,
              optional: bool = False, note: str = ""):
    """``value`` if it is an int in [minimum, maximum] (None too, with ``optional``),
    else a ValueError naming ``name``. A bool is refused: True as a size is a mistake."""
    if optional and value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        if maximum is not None:
            what = f"an int in [{minimum:,}, {maximum:,}]"
        else:
            what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' * optional}{note}, got {value!r}")
    return value


def check_seed(name: str, value) -> int:
    """``value`` if it is an int (any, as torch.Generator.manual_seed takes), else a
    TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return value


def check_fraction(name: str, value, *, closed: bool = False) -> float:
    """``value`` as a float in [0, 1) (with ``closed``, [0, 1]), else a ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"{name} must be a number in [0, 1{']' if closed else ')'}, got "
                         f"{value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
