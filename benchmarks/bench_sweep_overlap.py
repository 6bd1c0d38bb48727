"""Is tracking on the sweep's critical path? Fitting, tracking and wall time of a finished sweep.

Reads a work directory's MLflow store after `make sweep` (or `make all`): per trial run the
metrics `fit_seconds` (the engine's fits of the trial) and `tracking_seconds` (its fit runs,
figures and tables logged), and the sweep stage run's wall time (start to end). Prints the
sums, the wall time, and wall / max(fitting, tracking) and wall / (fitting + tracking): issue
19 item 3 asks that the wall time be within 15 % of the larger, not their sum. No timed
assertions; run by hand after a sweep:

    make all && .venv/bin/python benchmarks/bench_sweep_overlap.py [--workdir .]

Numbers go to benchmarks/README.md ("Tracking", the whole sweep).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.stages import config  # noqa: E402
from pipeline.tracking.runs import Tracker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=ROOT)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = ap.parse_args()
    params = config.load(args.params)
    tracker = Tracker(params.tracking.experiment, root=args.workdir.resolve())
    stages = tracker.search("tags.`zip.level` = 'stage' and tags.`zip.stage` = 'sweep' and "
                            "attributes.status = 'FINISHED'")  # fmt: skip
    if not stages:
        raise SystemExit(f"no finished sweep stage run under {args.workdir}")
    stage = max(stages, key=lambda r: r.info.start_time)
    wall = (stage.info.end_time - stage.info.start_time) / 1000
    trials = tracker.search(f"tags.`mlflow.parentRunId` = '{stage.info.run_id}' and "
                            "tags.`zip.level` = 'trial'")  # fmt: skip
    fitting = sum(t.data.metrics.get("fit_seconds", 0.0) for t in trials)
    tracking = sum(t.data.metrics.get("tracking_seconds", 0.0) for t in trials)
    fits = sum(int(t.data.params.get("fits", 0)) for t in trials)
    print(f"sweep stage run {stage.info.run_id}: {len(trials)} trials, {fits} fits")
    print(f"  fitting  {fitting:8.1f} s   (sum of the trials' fit_seconds)")
    print(f"  tracking {tracking:8.1f} s   (sum of the trials' tracking_seconds; "
          f"{fits / tracking if tracking else float('nan'):.1f} fit runs / s)")  # fmt: skip
    print(f"  wall     {wall:8.1f} s   (the stage run, start to end)")
    print(f"  wall / max(fitting, tracking) = {wall / max(fitting, tracking):.3f}")
    print(f"  wall / (fitting + tracking)   = {wall / (fitting + tracking):.3f}")


if __name__ == "__main__":
    main()
