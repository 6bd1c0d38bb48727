"""The float64 Newton oracles: the exact intercept-only ZIP MLE and the count-regression fits."""
