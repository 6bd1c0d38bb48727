"""`python -m pipeline.config`: validate params.yaml, `--stamp STAGE`.

The stage itself is `pipeline.stages.config`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.config import main

if __name__ == "__main__":
    run(main)
