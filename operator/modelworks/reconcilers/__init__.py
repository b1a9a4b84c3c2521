"""One level-based ``reconcile(obj, *, kube, registry, now) -> Outcome`` per kind."""
