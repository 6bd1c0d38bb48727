"""MLflow runs, per-fit logging, the Optuna study and trial loop, safe interrupts."""
