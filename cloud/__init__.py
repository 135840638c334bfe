"""Real-cluster backends (GKE, any kubeconfig cluster) that write the simulator's Trace.

They import ``sim`` (Scenario, Trace), never the other way round, and import their SDKs
(google-cloud-container, kubernetes, locust) lazily. Not built yet: see the real-cluster
backend issue.
"""
