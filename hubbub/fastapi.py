"""``hubbub.fastapi``: the FastAPI/ASGI integration (``pip install hubbub[fastapi]``); see
:mod:`hubbub.integrations.fastapi`."""

from hubbub.integrations.fastapi import HubDep, get_hub, lifespan

__all__ = ["HubDep", "get_hub", "lifespan"]
