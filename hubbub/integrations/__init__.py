"""Web framework integrations: :mod:`hubbub.integrations.flask` (``hubbub[flask]``) and
:mod:`hubbub.integrations.fastapi` (``hubbub[fastapi]``), also importable as
``hubbub.flask`` and ``hubbub.fastapi``."""
