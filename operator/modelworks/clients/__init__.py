"""The only modules that talk to the network: the Kubernetes API and MLflow."""
