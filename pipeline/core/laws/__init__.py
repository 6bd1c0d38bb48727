"""The probability laws: the ZIP and the count families' log-pmfs, their derivative terms,
samplers, cdf/sf, and the family names."""
