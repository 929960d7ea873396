from rest_framework.routers import SimpleRouter

from streams.api import views

router = SimpleRouter()
router.register("servers", views.ServerViewSet, basename="server")
router.register("applications", views.ApplicationViewSet, basename="application")
router.register("proxy-members", views.ProxyMemberViewSet, basename="proxy-member")
router.register("keys", views.StreamKeyViewSet, basename="key")
router.register("sessions", views.PublishSessionViewSet, basename="session")
router.register("publish-rejects", views.PublishRejectViewSet, basename="publish-reject")
router.register("deploy-jobs", views.DeployJobViewSet, basename="deploy-job")
router.register("publish-blocks", views.PublishBlockViewSet, basename="publish-block")
urlpatterns = router.urls
