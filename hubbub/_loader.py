"""Finding the user's hub from ``-A module:attr``."""

from __future__ import annotations

import importlib
import os
import sys

from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError
from hubbub.hub import Hub

_EXAMPLE = "write -A module:attribute, e.g. -A shop.tasks:hub"


def load_hub(path: str) -> Hub:
    """Import ``module:attr`` (attr defaults to ``hub``) and return that Hub.

    The working directory is put on ``sys.path`` first, as ``python -m`` would.

    Raises:
        ConfigurationError: the path is malformed (empty, relative, not dotted names), the
            module or attribute is missing, or the attribute is not a Hub.
    """
    module_name, _, attr = path.strip().partition(":")
    attr = attr or "hub"
    _check(path, module_name, attr)
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
        # The app itself imports something that is not installed.
        raise ConfigurationError(f"importing {module_name!r} for -A {path} failed: {exc}; "
                                 "install it in this environment") from None
    hubs = sorted(name for name, value in vars(module).items() if isinstance(value, Hub))
    if not hasattr(module, attr):
        hint = did_you_mean(attr, hubs) or (
            f"; its Hub is {', '.join(hubs)}: -A {module_name}:{hubs[0]}" if hubs
            else "; create one there: hub = Hub(...)")
        raise ConfigurationError(f"-A {path}: module {module_name!r} has no {attr!r}{hint}")
    hub = getattr(module, attr)
    if not isinstance(hub, Hub):
        tip = f"; its Hub is {', '.join(hubs)}" if hubs else ""
        raise ConfigurationError(f"-A {path}: {module_name}.{attr} is a "
                                 f"{type(hub).__name__}, not a hubbub.Hub{tip}")
    hub.import_path = f"{module_name}:{attr}"
    return hub


def _check(path: str, module_name: str, attr: str) -> None:
    if not module_name:
        raise ConfigurationError(f"-A {path!r} names no module; {_EXAMPLE}")
    if module_name.startswith("."):
        raise ConfigurationError(f"-A {path}: a relative module cannot be imported; run from "
                                 f"the package's parent folder and {_EXAMPLE}")
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigurationError(f"-A {path}: {module_name!r} is not a module path "
                                 f"(dotted Python names); {_EXAMPLE}")
    if not attr.isidentifier():
        raise ConfigurationError(f"-A {path}: {attr!r} is not a Python name; {_EXAMPLE}")
