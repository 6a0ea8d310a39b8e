"""numpy, imported on first use.

Every command is defined when the CLI starts (to list them in --help and
parse their options), but only the decoders need numpy, whose import costs
about 0.15 s: modules take ``np`` from here, and the first attribute read
imports the real module.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


np: Any = LazyModule("numpy")
