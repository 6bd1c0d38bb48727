"""`python -m pipeline.aggregate`: the report from the sweep's tables.

The stage itself is `pipeline.stages.aggregate`; this entry module only runs it.
"""

from pipeline.stages.aggregate import main
from pipeline.stages.cli import run

if __name__ == "__main__":
    run(main)
