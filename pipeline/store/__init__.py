"""The file contract and parquet I/O: stage outputs, datasets, users' count files."""
