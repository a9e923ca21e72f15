"""The Celery application shared by the API (to send) and the workers (to run)."""

from __future__ import annotations

from celery import Celery

from inferq.queue import kombu_patch
from inferq.settings import Settings, get_settings


def make_celery(settings: Settings) -> Celery:
    kombu_patch.install()
    app = Celery("inferq", broker=settings.celery_broker_url, include=["inferq.workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # results live in PostgreSQL, not in a result backend
        task_serializer="json",
        accept_content=["json"],
        # No task-sent event: it is one more Redis publish inside every send (1.5 ms a send
        # with it, 0.6 without, here), and Flower shows a task from its received event on.
        task_send_sent_event=False,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # The API must answer 503 quickly when Redis is gone, not retry for seconds.
        task_publish_retry=False,
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


celery_app = make_celery(get_settings())
