"""Pure functions of frames: the sweep's objective, recovery statistics, the blog table."""
