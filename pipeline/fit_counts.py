"""`python -m pipeline.fit_counts`: ZIP against Poisson on your own counts.

The stage itself is `pipeline.stages.fit_counts`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.fit_counts import main

if __name__ == "__main__":
    run(main)
