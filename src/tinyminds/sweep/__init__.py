"""`tinyminds sweep`: hyperparameter sweeps on Optuna, each trial an ordinary run folder.

`space` reads and checks the search space, `runner` runs the workers over the study's journal in
SWEEP_DIR, `report` writes the report and the status.
"""
