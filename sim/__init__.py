"""scalelab's simulator: TF Serving on Kubernetes with the HPA and the cluster autoscaler.

``import sim`` stays light: no cloud SDK, no Locust (their gevent patching would leak in).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
