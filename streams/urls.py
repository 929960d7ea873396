from django.urls import path

from streams import views

urlpatterns = [
    path("nginx-rtmp/<int:server_id>/<str:event>", views.nginx_rtmp_callback, name="nginx-rtmp-callback"),
]
