"""The model server: MLflow's own scoring app, plus metrics and per-feature histograms."""
