"""What the quality Jobs keep out of their process before pyarrow is imported.

``pyarrow.dataset`` imports pandas when it is installed (its pandas shim is probed while
the module initialises), which the image has for MLflow: about a second and 45 MiB the
check never uses. Imported before pyarrow, and importing nothing heavy itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

UNUSED = frozenset({"pandas"})


class Refuse:
    """An import finder that refuses the modules named, as if they were not installed."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} is left out of this process", name=name)
        return None


def refuse_unused() -> None:
    """Refuse pandas in this process from now on (once; a module already imported stays)."""
    if not any(isinstance(f, Refuse) for f in sys.meta_path):
        sys.meta_path.insert(0, Refuse(UNUSED))
