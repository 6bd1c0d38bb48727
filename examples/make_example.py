"""Write `examples/fish_caught.csv`: SIMULATED counts of fish caught by 250 park visitors.

The data are simulated (no download, no real survey): run once with a fixed seed,
`.venv/bin/python examples/make_example.py`, and the same file comes out byte for byte.

The law is zero-inflated, in the spirit of the classic state-park fishing survey: a visitor
fishes with a probability that rises with group size (`persons`); a visitor who does not fish
always reports 0 (a structural zero); a visitor who fishes catches Poisson(rate) fish, where
the rate is a little higher for campers. Fishers can still catch nothing (sampling zeros).

Columns: `visitor` (id), `count` (fish caught), `camper` (0/1), `persons` (group size 1-4).
"""

from pathlib import Path

import numpy as np

SEED = 20240611
N_VISITORS = 250
OUT = Path(__file__).resolve().parent / "fish_caught.csv"


def simulate(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw the visitors; returns the columns."""
    persons = rng.integers(1, 5, n)
    camper = rng.binomial(1, 0.55, n)
    fishes = rng.binomial(1, 0.35 + 0.08 * persons)  # 43% to 67% of groups fish at all
    rate = np.where(camper == 1, 3.2, 2.6)
    count = fishes * rng.poisson(rate)
    return {"visitor": np.arange(1, n + 1), "count": count, "camper": camper, "persons": persons}


def main() -> None:
    cols = simulate(np.random.default_rng(SEED), N_VISITORS)
    lines = [",".join(cols)]
    lines += [",".join(str(int(v)) for v in row) for row in zip(*cols.values())]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({N_VISITORS} simulated visitors)")


if __name__ == "__main__":
    main()
