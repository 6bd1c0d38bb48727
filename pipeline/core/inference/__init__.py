"""Inference on fitted models: likelihood-ratio and Vuong tests, chi-square tails, goodness
of fit, Wald and profile intervals, model choice."""
