"""WSGI entry point (HTTP only; websockets need the ASGI application).

nginx-rtmp's callbacks (``/hooks/nginx-rtmp/…``) are answered without Django's middleware chain and
URL resolver, which cost as much CPU as the publish decision itself; see ``streams.views``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django_application = get_wsgi_application()

from streams.views import CallbackApplication  # noqa: E402  (needs the apps loaded)

application = CallbackApplication(django_application)
