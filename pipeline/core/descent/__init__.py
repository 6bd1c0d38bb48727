"""Gradient descent: the batched engines, their losses, optimizers and outcomes."""
