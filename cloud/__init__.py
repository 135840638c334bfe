"""Real-cluster backends (GKE, any kubeconfig cluster) that write the simulator's Trace.

They import ``sim`` (Scenario, Trace), never the other way round, and import their SDKs
(google-cloud-container, kubernetes, locust) lazily: ``import cloud`` loads none of them.

- ``backend``: the template-method :class:`~cloud.backend.Backend`, its registry and the
  features each backend lacks (with reasons); ``gke`` and ``kube`` are the two backends.
- ``plan``: what a run creates and its cost bracket (no credentials needed).
- ``manifests``: the lab's Kubernetes objects, validated against the OpenAPI schemas.
- ``credentials``: GKE and kubeconfig clients, tokens refreshed during long runs.
- ``workload``, ``observe``, ``session``, ``load``: create the objects, poll the cluster,
  drive Locust (in a child process), and assemble the Trace.
- ``teardown``: the ledger that removes everything a run created, whatever happened.
- ``serve``: a local TF Serving REST stand-in; ``cli``: the commands.
"""
