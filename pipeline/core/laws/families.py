"""The count families by name: which has a zero part (and which kind) and which a dispersion.

No torch here: the command line (`fit_counts --family`) and the params checks read these
without loading the maths (`count_terms` computes the families' likelihoods).
"""

FAMILIES = ("poisson", "nb", "zip", "zinb", "hurdle_poisson", "hurdle_nb")
# The nested baseline of each family with a dispersion (α → 0 on the boundary).
POISSON_LIMIT = {"nb": "poisson", "zinb": "zip", "hurdle_nb": "hurdle_poisson"}


def check_family(family: str) -> None:
    """Raise ValueError naming the known families when `family` is not one of them."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")


def zero_part(family: str) -> str | None:
    """'inflation' (zip, zinb), 'hurdle' (hurdle_*) or None (poisson, nb)."""
    check_family(family)
    if family.startswith("hurdle"):
        return "hurdle"
    return "inflation" if family.startswith("zi") else None


def has_dispersion(family: str) -> bool:
    """Whether the family has the NB dispersion log α as a parameter."""
    check_family(family)
    return family in POISSON_LIMIT
