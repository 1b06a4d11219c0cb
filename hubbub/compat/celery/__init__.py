"""Celery's wire protocol v2, read and written: the migration bridge (docs/celery.md).

- ``protocol``: a Celery message read into an ``Envelope`` and built from one.
- ``redis_source`` / ``amqp_source``: a worker lane consuming Celery's queues with leases
  (``hubbub worker --celery-queue NAME``); ``bridge.celery_lane`` builds one.
- ``results``: ``celery-task-meta-<id>`` records that ``AsyncResult(id).get()`` reads.
- ``producer``: ``hub.send_task(..., protocol="celery")`` for a Celery worker to run.

Nothing is imported here, so that reading the protocol costs no driver import.
"""
