"""Modelworks: train, register, serve, watch for drift, retrain — on Kubernetes."""

__version__ = "0.1.0"
