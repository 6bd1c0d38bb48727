"""Words and figures: the report's markdown and plots, the fit_counts text and figures."""
