"""Model quality: captured predictions joined with ground truth, and their metrics."""
