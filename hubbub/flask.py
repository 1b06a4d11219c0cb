"""``hubbub.flask``: the Flask integration (``pip install hubbub[flask]``); see
:mod:`hubbub.integrations.flask`."""

from hubbub.integrations.flask import CONFIG_KEYS, Hubbub

__all__ = ["CONFIG_KEYS", "Hubbub"]
