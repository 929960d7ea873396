from django.urls import path

from monitoring.api import MetricsView

urlpatterns = [path("metrics", MetricsView.as_view(), name="metrics")]
