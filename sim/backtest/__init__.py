"""Backtest a recorded HPA: would the exact decision core have done what the real one did?

- :mod:`~sim.backtest.series`, :mod:`~sim.backtest.openmetrics`,
  :mod:`~sim.backtest.prometheus`: raw series from a file or a Prometheus server (boundary).
- :mod:`~sim.backtest.recording`: those series as plain data (HPA rounds, pods, CPU counters).
- :mod:`~sim.backtest.replay`: pure replay of every sync through :func:`sim.hpa.reconcile`.
- :mod:`~sim.backtest.export`: any scalelab run as OpenMetrics under the same names.
- :mod:`~sim.backtest.load`: the recorded request rate as a replay load file.
"""
