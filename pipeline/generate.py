"""`python -m pipeline.generate`: the data stage: datasets, histograms, exact MLEs.

The stage itself is `pipeline.stages.generate`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.generate import main

if __name__ == "__main__":
    run(main)
