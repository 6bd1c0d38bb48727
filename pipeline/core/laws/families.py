"""Name-level views of `core.model.family` for code that still passes family names (the descent
engine, benchmarks): whether a named family has a zero part (and which) and a dispersion.
"""

from pipeline.core.model import FAMILIES, family

__all__ = ["FAMILIES", "POISSON_LIMIT", "check_family", "has_dispersion", "zero_part"]

# The nested baseline of each family with a dispersion (α → 0 on the boundary).
POISSON_LIMIT = {f: family(f).nested for f in FAMILIES if family(f).dispersion}


def check_family(name: str) -> None:
    """Raise ValueError naming the known families when `name` is not one of them."""
    family(name)


def zero_part(name: str) -> str | None:
    """'inflation' (zip, zinb), 'hurdle' (hurdle_*) or None (poisson, nb)."""
    return family(name).zero


def has_dispersion(name: str) -> bool:
    """Whether the family has the NB dispersion log α as a parameter."""
    return family(name).dispersion
