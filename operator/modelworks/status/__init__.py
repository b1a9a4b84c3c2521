"""Pure status computation: (object, observed facts, now) -> new status."""
