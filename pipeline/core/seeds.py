"""One seed tree: every random stream of the study is a named child of the master `seed`.

    stream(seed, name, *key) = SeedSequence(seed, spawn_key=(STREAMS[name], *key))

| stream       | key                          | what it draws                                   |
| ------------ | ---------------------------- | ----------------------------------------------- |
| `data`       | (crc32(scenario), replicate) | a dataset: child 0 the gates, child 1 the counts |
|              |                              | (regression: child 0 the covariates, 1 the counts) |
| `inits`      | (crc32(scenario), replicate) | the sweep's random starts for that dataset       |
| `blog`       | ()                           | the blog table's starts                          |
| `fit_counts` | ()                           | gradient descent's starts on a user's counts     |
| `sampler`    | (worker, trials in study)    | a TPE sampler's seed (32 bits)                   |
| `shuffle`    | (batch size,)                | the sweep's mini-batch epoch permutations        |

Streams are keyed by name, never by position, so adding a scenario, a replicate, a worker or
a stream leaves every other stream unchanged, and any seed >= 0 works with any number of
workers (`SeedSequence` takes integers of any size). Core layer: numpy only, no state.
"""

from __future__ import annotations

import zlib

import numpy as np

STREAMS = {"data": 1, "inits": 2, "blog": 3, "fit_counts": 4, "sampler": 5, "shuffle": 6}


def name_key(name: str) -> int:
    """A text (a scenario's name) as a spawn-key entry: its CRC-32."""
    return zlib.crc32(name.encode())


def stream(seed: int, name: str, *key: int) -> np.random.SeedSequence:
    """The seed sequence of stream `name` (see the table above).

    Args:
        seed: the master seed (`params.seed`), any integer >= 0.
        name: a key of `STREAMS`.
        key: the stream's own key, e.g. (name_key(scenario), replicate).

    Returns:
        `SeedSequence(seed, spawn_key=(STREAMS[name], *key))`.
    """
    return np.random.SeedSequence(seed, spawn_key=(STREAMS[name], *key))


def generator(seed: int, name: str, *key: int) -> np.random.Generator:
    """A PCG64 generator on `stream(seed, name, *key)`."""
    return np.random.default_rng(stream(seed, name, *key))


def children(seq: np.random.SeedSequence, count: int) -> list[np.random.Generator]:
    """Generators on the first `count` children of `seq`, the same on every call.

    Built from the spawn keys directly (`SeedSequence.spawn` counts its calls).
    """
    key = tuple(seq.spawn_key)
    return [
        np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*key, i)))
        for i in range(count)
    ]


def sampler_seed(seed: int, *key: int) -> int:
    """A 32-bit seed for an Optuna sampler from stream `sampler` (numpy's legacy seeding,
    which TPE uses, takes only seeds below 2**32)."""
    return integer(stream(seed, "sampler", *key), bits=32)


def integer(seq: np.random.SeedSequence, bits: int = 63) -> int:
    """A non-negative integer of at most `bits` bits from `seq` (for APIs that take an int)."""
    word = int(seq.generate_state(1, dtype=np.uint64)[0])
    return word >> (64 - bits)


def label(seq: np.random.SeedSequence) -> str:
    """The seed sequence as text that rebuilds it, e.g. "SeedSequence(entropy=0, ...)"."""
    return f"SeedSequence(entropy={seq.entropy}, spawn_key={tuple(seq.spawn_key)})"
