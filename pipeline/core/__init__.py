"""The maths: distributions, likelihoods, optimizers, the batched engine, oracles, inference."""
