"""Finding the user's hub from ``-A module:attr``."""

from __future__ import annotations

import importlib
import os
import sys

from hubbub.errors import ConfigurationError
from hubbub.hub import Hub


def load_hub(path: str) -> Hub:
    """Import ``module:attr`` (attr defaults to ``hub``) and return that Hub.

    The working directory is put on ``sys.path`` first, as ``python -m`` would.

    Raises:
        ConfigurationError: the module or attribute is missing, or is not a Hub.
    """
    module_name, _, attr = path.partition(":")
    attr = attr or "hub"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"cannot import {module_name!r} for -A {path}: run from the folder that holds it"
                " or put it on PYTHONPATH"
            ) from None
        raise
    hub = getattr(module, attr, None)
    if not isinstance(hub, Hub):
        raise ConfigurationError(f"{path}: {module_name}.{attr} is not a hubbub.Hub")
    hub.import_path = f"{module_name}:{attr}"
    return hub
