"""Simulated data: covariates, designs and chunked ZIP draws."""
