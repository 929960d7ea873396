from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import dashboards, server_pages, views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", dashboards.HomeView.as_view(), name="home"),
    path("servers/", server_pages.ServerListView.as_view(), name="server-list"),
    path("streams/", dashboards.StreamListView.as_view(), name="stream-list"),
    path("streams/<int:pk>/", dashboards.StreamDetailView.as_view(), name="stream-detail"),
    path("servers/new/", views.ServerFormView.as_view(), name="server-create"),
    path("servers/<int:pk>/", server_pages.ServerDetailView.as_view(), name="server-detail"),
    path("servers/<int:pk>/edit/", views.ServerFormView.as_view(), name="server-edit"),
    path("servers/<int:pk>/delete/", views.ServerDeleteView.as_view(), name="server-delete"),
    path("servers/<int:server_pk>/applications/new/", views.ApplicationFormView.as_view(), name="application-create"),
    path("applications/<int:pk>/", views.ApplicationDetailView.as_view(), name="application-detail"),
    path("applications/<int:pk>/edit/", views.ApplicationFormView.as_view(), name="application-edit"),
    path("applications/<int:pk>/delete/", views.ApplicationDeleteView.as_view(), name="application-delete"),
    path("applications/<int:app_pk>/keys/new/", views.KeyIssueView.as_view(), name="key-issue"),
    path("keys/<int:pk>/issued/", views.KeyIssuedView.as_view(), name="key-issued"),
    path("keys/<int:pk>/", views.KeyDetailView.as_view(), name="key-detail"),
    path("keys/<int:pk>/revoke/", views.KeyRevokeView.as_view(), name="key-revoke"),
    path("keys/<int:pk>/rotate/", views.KeyRotateView.as_view(), name="key-rotate"),
    path("sessions/<int:pk>/kick/", views.SessionKickView.as_view(), name="session-kick"),
    path("publish-security/", views.PublishSecurityView.as_view(), name="publish-security"),
    path("servers/<int:pk>/hook-secret/", views.ServerHookSecretView.as_view(), name="server-hook-secret"),
    path("servers/<int:pk>/config/", views.ServerConfigView.as_view(), name="server-config"),
    path("alerts/", views.AlertListView.as_view(), name="alert-list"),
    path("audit/", views.AuditListView.as_view(), name="audit-list"),
    path("users/", views.UserListView.as_view(), name="user-list"),
    path("users/<int:pk>/", views.UserListView.as_view(), name="user-edit"),
    path("tokens/", views.TokenListView.as_view(), name="token-list"),
    path("tokens/<int:pk>/revoke/", views.TokenRevokeView.as_view(), name="token-revoke"),
]
