"""`python -m pipeline.sweep`: every fit of every trial, tracked; `--tune`: TPE.

The stage itself is `pipeline.stages.sweep`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.sweep import main

if __name__ == "__main__":
    run(main)
