"""The experiment runtime: config, run store, estimators, executors, the search driver,
resume, reports and export."""

from nasir.runtime.driver import Driver, run_search
from nasir.runtime.experiment import ConfigError, Experiment, load_experiment
from nasir.runtime.store import RunStore

__all__ = ["ConfigError", "Driver", "Experiment", "RunStore", "load_experiment", "run_search"]
