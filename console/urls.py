from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from console import api_views, views

api_v1 = [
    path("", include("monitoring.api")),  # before streams: servers/<id>/status/ and history/
    path("", include("streams.api.urls")),
    path("", include(api_views.urlpatterns)),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("monitoring.urls")),  # /metrics
    path("hooks/", include("streams.urls")),
    path("", include("frontend.urls")),
]

handler400 = "console.views.bad_request"
handler403 = "console.views.permission_denied"
handler404 = "console.views.page_not_found"
handler500 = "console.views.server_error"
