"""``scalelab calibrate``: measure a model in TensorFlow (or a live TF Serving) into a profile.

- ``local``: build the model with TensorFlow, export it as a SavedModel laid out like the lab's,
  and for each intra-op thread count climb a closed-loop concurrency ladder to past its
  throughput knee (``ladder``), recording throughput, CPU in cores and latency per point, one
  subprocess per thread count (TensorFlow fixes its thread pools at start-up, as TF Serving
  does).
- ``endpoint``: the same ladder against a live TF Serving REST endpoint (no TensorFlow needed),
  CPU from a local process or cgroup when named.
- ``derive``: turn a local measurement into a GKE node's profile from public facts.
- ``stats``: quantiles, lognormal fits, repeat spreads (numpy only).

TensorFlow is an optional extra (``pip install 'scalelab[calibrate]'``) and is imported only
inside the functions that need it: importing ``sim`` or ``sim.serving.calibrate`` never loads it.
"""

from __future__ import annotations

INSTALL_HINT = "pip install 'scalelab[calibrate]'  (or: pip install 'tensorflow-cpu>=2.16')"


class CalibrationError(RuntimeError):
    """A calibration that cannot run or went wrong; the message says what to do."""
