"""Queue naming, the Celery app, job events and the live worker registry."""
