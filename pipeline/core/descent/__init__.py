"""Gradient descent: the batched engines (intercept-only ZIP, designs), their losses, optimizers
and their shared bookkeeping (stop rule, results)."""
