"""What the worker imports: ``hubbub worker -A shop.worker:hub``.

Creating the app here is what gives every task its app context, in the worker and in each
of its child processes (they import this module too).
"""

from shop import create_app
from shop.extensions import hubbub

app = create_app()
hub = hubbub.hub
