from rest_framework.routers import SimpleRouter

from streams.api import views

router = SimpleRouter()
router.register("servers", views.ServerViewSet, basename="server")
router.register("applications", views.ApplicationViewSet, basename="application")
router.register("keys", views.StreamKeyViewSet, basename="key")
urlpatterns = router.urls
