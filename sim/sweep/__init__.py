"""What-if sweeps and HPA tuning: from a scenario to a recommended configuration.

A sweep runs a scenario at every point of a grid of field values (``--vary``), each with the
same seeds (common random numbers: a seed gives the same load at every point, so differences
between points are the configuration's, not noise), checks an SLO, ranks the points by cost,
finds the Pareto front of cost against the SLO metric and recommends the cheapest point that
meets the SLO in every seed. ``tune`` replaces the grid with a seeded Optuna search.

Runs go through an executor (local process pool or Dask) and a cache keyed by scenario hash and
seed, so an interrupted sweep resumes without losing or repeating a run.
"""
