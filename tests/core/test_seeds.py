"""The seed tree: named, independent, reproducible streams for any seed and any worker."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import seeds


def test_stream_is_the_documented_seed_sequence():
    seq = seeds.stream(7, "data", seeds.name_key("blog"), 3)
    ref = np.random.SeedSequence(7, spawn_key=(seeds.STREAMS["data"], seeds.name_key("blog"), 3))
    assert seq.generate_state(4).tolist() == ref.generate_state(4).tolist()
    assert seeds.label(seq) == f"SeedSequence(entropy=7, spawn_key={tuple(ref.spawn_key)})"


def test_children_equal_spawned_children_on_every_call():
    seq = seeds.stream(7, "data", 1, 3)
    fresh = seeds.stream(7, "data", 1, 3).spawn(2)
    for _ in range(2):  # spawn() counts its calls; children() must not
        gate, count = seeds.children(seq, 2)
        assert gate.random() == np.random.default_rng(fresh[0]).random()
        assert count.random() == np.random.default_rng(fresh[1]).random()


def test_streams_are_distinct_by_name_and_key():
    draws = {
        (name, key): seeds.generator(0, name, *key).random()
        for name in seeds.STREAMS
        for key in ((), (1,), (1, 2), (2, 1))
    }
    assert len(set(draws.values())) == len(draws)
    assert seeds.generator(0, "blog").random() == seeds.generator(0, "blog").random()
    assert seeds.generator(0, "blog").random() != seeds.generator(1, "blog").random()


@pytest.mark.parametrize("seed", [0, 2**32 - 1, 2**32, 4294000000, 2**64 + 5, 10**30])
@pytest.mark.parametrize("worker", [0, 1, 7])
def test_any_valid_seed_gives_32_bit_sampler_seeds(seed, worker):
    """Seeds that pass validation work with any number of workers (the audit's item 7)."""
    import optuna

    value = seeds.sampler_seed(seed, worker, 3)
    assert 0 <= value < 2**32
    optuna.samplers.TPESampler(seed=value)  # numpy's legacy seeding accepts it
    assert value == seeds.sampler_seed(seed, worker, 3)
    assert value != seeds.sampler_seed(seed, worker + 1, 3)


def test_integer_has_the_requested_bits():
    seq = seeds.stream(3, "inits", 1, 2)
    assert 0 <= seeds.integer(seq) < 2**63
    assert 0 <= seeds.integer(seq, bits=8) < 2**8
    assert seeds.integer(seq, bits=8) == seeds.integer(seq) >> 55
