"""`python -m pipeline.dashboard`: optuna-dashboard on the study's storage.

The stage itself is `pipeline.stages.dashboard`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.dashboard import main

if __name__ == "__main__":
    run(main)
