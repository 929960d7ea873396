"""The Django project (settings, urls, ASGI/WSGI, Celery) and the cross-cutting app: roles, API tokens,
audit log, encryption at rest and the outbound-HTTP seam."""
