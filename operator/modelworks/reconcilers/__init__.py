"""One level-based ``reconcile(obj, *, kube, registry, now) -> Decision`` per kind."""
