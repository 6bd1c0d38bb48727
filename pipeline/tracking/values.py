"""Values shaped for MLflow: thinned metric histories, flat params, redacted URLs.

MLflow stores flat string params (at most 6000 characters), finite metric values, and pays per
metric point; these helpers make the study's values fit. Pure numpy, no MLflow import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np


def thin(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most `max_points` finite points, evenly spread, always the first and the last."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(steps) > max_points:
        idx = np.unique(np.linspace(0, len(steps) - 1, max_points).round().astype(int))
        steps, values = steps[idx], values[idx]
    return steps, values


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (for printing and logging)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


_NOT_IN_KEY = re.compile(r"[^\w\-.]")  # MLflow keys: alphanumerics _ - . (and space /)


def key_part(text: object) -> str:
    """`text` usable in an MLflow key: any character MLflow refuses becomes `_`
    (`health[poor]` -> `health_poor_`)."""
    return _NOT_IN_KEY.sub("_", str(text))


def flatten(config: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """A nested config dict as flat `a.b.c` params (MLflow params are flat strings).

    A list of mappings (the scenarios) is flattened item by item, under each item's `name`
    when every item has a distinct one (`data.scenarios.blog.pi`), else under its index
    (`data.scenarios.0.pi`); other lists stay whole values (`[0.001, 0.01]`). Characters
    MLflow refuses in a key become `_` (`key_part`).
    """
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key_part(key)}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif (
            value and isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value)
        ):
            names = [v.get("name") for v in value]
            named = all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
            for i, item in enumerate(value):
                rest = {k: v for k, v in item.items() if not (named and k == "name")}
                flat.update(flatten(rest, f"{name}.{key_part(names[i]) if named else i}."))
        else:
            flat[name] = value
    return flat


def param(value: object) -> str:
    """A param value as MLflow stores it: text, cut to its 6000-character limit."""
    text = value if isinstance(value, str) else repr(value)
    return text[:6000]


def finite(value: object) -> bool:
    """Whether a metric value is a finite number (MLflow refuses NaN and inf)."""
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False
