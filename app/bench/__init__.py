"""Tabular benchmarks built into nasir (answers in seconds, no training)."""

from nasir.bench.nb201_table import NB201Table

__all__ = ["NB201Table"]
