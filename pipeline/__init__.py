"""Can gradient descent in PyTorch recover the parameters of zero-inflated count models?

The module map is in the README ("Where the code lives"). The rooms, from the top: the entry
modules `pipeline/<stage>.py`, then `pipeline/stages/`, `pipeline/tracking/`,
`pipeline/report/`, `pipeline/analysis/` and `pipeline/store/`, and at the bottom
`pipeline/core/` (by idea: `laws/`, `oracle/`, `inference/`, `descent/`, `simulation/`);
imports point down that list only (`tests/test_layers.py`).
"""
