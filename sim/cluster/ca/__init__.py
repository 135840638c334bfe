"""The cluster autoscaler's pieces, one concern per module (the loop is in
``sim.cluster.autoscaler``): ``options`` (flags and GKE profiles), ``model`` (pools, nodes,
state, decisions, reasons), ``drainability`` (one rule per file), ``estimator`` (binpacking),
``expander``, ``scaleup`` and ``scaledown``."""
