"""Speaking other task queues' wire protocols, for teams that move over to hubbub gradually.

``hubbub.compat.celery`` reads and writes Celery's protocol v2 (docs/celery.md). Nothing here
imports the other project: the protocols are spoken from their published wire format.
"""
