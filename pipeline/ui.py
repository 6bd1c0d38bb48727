"""`python -m pipeline.ui`: the MLflow UI on the study's store.

The stage itself is `pipeline.stages.ui`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.ui import main

if __name__ == "__main__":
    run(main)
