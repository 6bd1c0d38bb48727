"""Can gradient descent in PyTorch recover the parameters of a zero-inflated Poisson?

The module map (imports point down the list; each room imports only the rooms below it):

- `pipeline/<stage>.py` (entry): `python -m pipeline.generate | sweep | aggregate | fit_counts
  | config | ui | dashboard | services`; each only runs its stage's `main`. The Makefile calls
  these.
- `pipeline/stages/`: one module per stage with a thin `main()` (generate, sweep with
  sweep_steps, aggregate, fit_counts, ui, dashboard, services: PostgreSQL + MLflow server for
  workers), the params (`config`, its data block `config_data`) and the CLI plumbing (`cli`:
  one-line errors, exit codes, progress bars).
- `pipeline/tracking/`: MLflow runs (`runs`), values shaped for MLflow (`values`), per-fit
  logging (`fit_runs`, regression payloads `reg_payloads`), the Optuna storage (`storage`),
  the study and its grid queue (`study`), dead workers' trials (`heartbeat`), one trial
  (`trial`), safe interrupts, quiet libraries.
- `pipeline/report/`: words and figures: the report's markdown and plots, per-fit convergence
  plots, the fit_counts text and rootogram.
- `pipeline/analysis/`: pure functions of frames: the sweep's problem and objective,
  recovery statistics, steps to reach the MLE, the blog's table.
- `pipeline/store/`: the file contract (`files`: every path, kind, stamp, atomic write),
  the data stage's parquet files, reading users' count files.
- `pipeline/core/`: the maths, torch/numpy/scipy only: the ZIP distribution (the one log-pmf),
  likelihood, optimizers, the batched engine and its outcome, the exact-MLE oracle, inference
  and profile intervals, simulation, the seed tree, histograms and the error types.

Start reading at `pipeline/core/distributions.py`, then `core/engine.py`, then a stage
(`stages/sweep.py`). `tests/test_layers.py` enforces the import rule.
"""
