"""How fast a TF Serving pod is: latency profiles (data and interpolation), the server model
the data plane runs, calibration that measures profiles, and fidelity checks against a real
model server."""
