"""`python -m pipeline.services start|stop|env`: PostgreSQL + MLflow server for workers.

The tool itself is `pipeline.stages.services`; this entry module only runs it.
"""

from pipeline.stages.cli import run
from pipeline.stages.services import main

if __name__ == "__main__":
    run(main)
