"""Console pages. Thin: parse the form, call one domain function, render or redirect."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from console import audit, tokens, users
from console.models import ApiToken, AuditEntry
from console.roles import GROUP_NAMES, Role, request_role, role_of
from frontend import forms
from streams import inventory, keys, rendering, sessions, wowza
from streams.models import Application, PublishReject, PublishSession, Server, StreamKey
from streams.ratelimit import publish_failures

ONCE_SESSION_KEY = "tally_show_once"


class RoleView(LoginRequiredMixin, View):
    """A page that needs at least ``read_role`` to view and ``write_role`` to POST."""

    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.user.is_authenticated:
            needed = self.write_role if request.method == "POST" else self.read_role
            if request_role(request) < needed:
                raise PermissionDenied("Your role does not allow this.")
        return super().dispatch(request, *args, **kwargs)

    def actor(self) -> audit.Actor:
        return audit.Actor.from_request(self.request)


def _show_once(request: HttpRequest, kind: str, object_id: int, secret: str, **extra: str) -> None:
    """Hand a secret to exactly one following page view (then it is gone from the session)."""
    request.session[ONCE_SESSION_KEY] = {"kind": kind, "id": object_id, "secret": secret, **extra}


def _pop_once(request: HttpRequest, kind: str, object_id: int) -> dict[str, Any] | None:
    data = request.session.get(ONCE_SESSION_KEY)
    if data and data.get("kind") == kind and data.get("id") == object_id:
        del request.session[ONCE_SESSION_KEY]
        return data  # type: ignore[no-any-return]
    return None


class ModelFormView(RoleView):
    """Create or edit one model instance through a ModelForm; the save is validated and audited."""

    read_role = Role.ADMIN
    form_class: Any = None
    title = ""

    def get_instance(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def success_url(self, instance: Any) -> str:
        raise NotImplementedError

    def get(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        instance = self.get_instance(**kwargs)
        return self._render(self.form_class(instance=instance), instance)

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        instance = self.get_instance(**kwargs)
        form = self.form_class(request.POST, instance=instance)
        if form.is_valid():
            try:
                audit.save_audited(form.instance, self.actor())
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"Saved {form.instance}.")
                return redirect(self.success_url(form.instance))
        return self._render(form, instance, status=400)

    def _render(self, form: Any, instance: Any, status: int = 200) -> HttpResponse:
        title = f"Edit {instance}" if instance.pk else self.title
        return render(
            request=self.request,
            template_name="frontend/form.html",
            context={"form": form, "title": title},
            status=status,
        )


class ServerFormView(ModelFormView):
    form_class = forms.ServerForm
    title = "Add a server"

    def get_instance(self, pk: int | None = None, **kwargs: Any) -> Server:
        return get_object_or_404(Server, pk=pk) if pk else Server()

    def success_url(self, instance: Server) -> str:
        return reverse("server-detail", args=[instance.pk])


class ApplicationFormView(ModelFormView):
    form_class = forms.ApplicationForm
    title = "Add an application"

    def get_instance(self, server_pk: int | None = None, pk: int | None = None, **kwargs: Any) -> Application:
        if pk:
            return get_object_or_404(Application.objects.select_related("server"), pk=pk)
        return Application(server=get_object_or_404(Server, pk=server_pk))

    def success_url(self, instance: Application) -> str:
        return reverse("application-detail", args=[instance.pk])


class DeleteView(RoleView):
    """Confirm, then delete with an audit entry (children cascade and are counted)."""

    read_role = Role.ADMIN
    model: Any = None

    def target(self, pk: int) -> Any:
        return get_object_or_404(self.model, pk=pk)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self.target(pk)
        return render(request, "frontend/confirm.html", {"title": f"Delete {obj}?", "danger": True, "form": None})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self.target(pk)
        after = self.after_delete_url(obj)
        audit.delete_audited(obj, self.actor())
        messages.success(request, f"Deleted {obj}.")
        return redirect(after)

    def after_delete_url(self, obj: Any) -> str:
        return reverse("server-list")


class ServerDeleteView(DeleteView):
    model = Server


class ApplicationDeleteView(DeleteView):
    model = Application

    def after_delete_url(self, obj: Application) -> str:
        return reverse("server-detail", args=[obj.server_id])


KEY_STATES = ("active", "rotating", "expired", "revoked")


def key_display_state(key: StreamKey, now: datetime) -> str:
    """The key's state for people: ``rotating`` is an active key whose previous secret still works."""
    state = str(key.state(now))
    if state == StreamKey.State.ACTIVE and key.previous_valid_until and key.previous_valid_until > now:
        return "rotating"
    return state


def keys_for_listing(queryset: QuerySet[StreamKey], now: datetime, state: str = "") -> QuerySet[StreamKey]:
    """Keys with their last use and open-session count annotated: one query, however many keys."""
    open_sessions = (
        PublishSession.objects.filter(key=OuterRef("pk"), ended__isnull=True)
        .order_by()
        .values("key")
        .annotate(n=Count("pk"))
        .values("n")
    )
    qs = (
        queryset.with_last_used()  # type: ignore[attr-defined]
        .annotate(live_publishers=Coalesce(Subquery(open_sessions, output_field=IntegerField()), 0))
        .order_by("public_name")
    )
    if state == "rotating":
        return qs.with_state("active", now).filter(previous_valid_until__gt=now)  # type: ignore[no-any-return]
    if state:
        return qs.with_state(state, now)  # type: ignore[no-any-return]
    return qs  # type: ignore[no-any-return]


class ApplicationDetailView(RoleView):
    """An application: who publishes now, and its keys (admins issue, rotate and revoke them here)."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        app = get_object_or_404(Application.objects.visible_to(request.user).select_related("server"), pk=pk)
        state = request.GET.get("state", "")
        if state not in KEY_STATES:
            state = ""
        now = timezone.now()
        rows = [(key, key_display_state(key, now)) for key in keys_for_listing(app.keys.all(), now, state)]
        live = app.publish_sessions.open().select_related("server", "key").order_by("public_name")
        context = {"app": app, "rows": rows, "state": state, "states": KEY_STATES, "live": live}
        return render(request, "frontend/application_detail.html", context)


class KeyIssueView(RoleView):
    read_role = Role.ADMIN

    def get(self, request: HttpRequest, app_pk: int) -> HttpResponse:
        app = get_object_or_404(Application, pk=app_pk)
        return render(request, "frontend/form.html", {"form": forms.KeyIssueForm(), "title": f"Issue a key for {app}"})

    def post(self, request: HttpRequest, app_pk: int) -> HttpResponse:
        app = get_object_or_404(Application.objects.select_related("server"), pk=app_pk)
        form = forms.KeyIssueForm(request.POST)
        if form.is_valid():
            try:
                issued = keys.issue_key(app, actor=self.actor(), **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                _show_once(request, "key", issued.key.pk, issued.secret)
                _wowza_message(request, issued.wowza)
                return redirect("key-issued", pk=issued.key.pk)
        return render(request, "frontend/form.html", {"form": form, "title": f"Issue a key for {app}"}, status=400)


def ffmpeg_command(publish_url: str) -> str:
    """An example ffmpeg command line that publishes a file to ``publish_url`` as a live stream."""
    return (
        "ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 3000k -g 60 "
        f"-c:a aac -b:a 128k -f flv {shlex.quote(publish_url)}"
    )


class KeyIssuedView(RoleView):
    """Shows the secret of a key just issued or rotated, once; a reload finds it gone."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(StreamKey.objects.select_related("application__server"), pk=pk)
        once = _pop_once(request, "key", key.pk)
        context: dict[str, Any] = {"key": key, "secret": None}
        if once:
            issued = keys.IssuedKey(key=key, secret=once["secret"])
            context.update(
                secret=issued.secret,
                obs_server_url=issued.obs_server_url,
                obs_stream_key=issued.obs_stream_key,
                username=issued.username,
                publish_url=issued.publish_url,
                ffmpeg_command=ffmpeg_command(issued.publish_url),
                rotated=once.get("action") == "rotate",
            )
        response = render(request, "frontend/key_issued.html", context)
        response["Cache-Control"] = "no-store"
        return response


class KeyRevokeView(RoleView):
    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(StreamKey, pk=pk)
        title = f"Revoke {key}? Its live publishers are dropped at once."
        return render(request, "frontend/confirm.html", {"title": title, "danger": True, "form": forms.RevokeForm()})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(StreamKey, pk=pk)
        form = forms.RevokeForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        result = keys.revoke_key(key, self.actor(), reason)
        if result.was_already_revoked:
            messages.info(request, f"{key} was already revoked.")
        else:
            messages.success(request, f"Revoked {key}.")
        for kick in result.kicks:
            level = messages.SUCCESS if kick.outcome == "dropped" else messages.WARNING
            messages.add_message(request, level, _kick_message(kick))
        _wowza_message(request, result.wowza)
        return redirect("key-detail", pk=key.pk)


def _wowza_message(request: HttpRequest, outcome: wowza.KeyOutcome | None) -> None:
    """Show what a key change did on Wowza (nothing for nginx-rtmp keys)."""
    if outcome is not None:
        messages.add_message(request, messages.SUCCESS if outcome.ok else messages.WARNING, outcome.text)


KICK_OUTCOMES = {
    "dropped": "dropped at once",
    "not_live": "not live on the server's current worker (it is refused at its next on_update)",
    "unreachable": "control module unreachable (it is refused at its next on_update)",
    "no_control": "server has no control URL (it is refused at its next on_update)",
}


def _kick_message(kick: sessions.KickResult) -> str:
    session = kick.session
    detail = f" ({kick.detail})" if kick.detail else ""
    return f"Live publisher of {session.public_name} on {session.server.name}: {KICK_OUTCOMES[kick.outcome]}{detail}."


class KeyDetailView(RoleView):
    """A key without its secret: state, settings, publish history; admins rotate and revoke here."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(
            StreamKey.objects.visible_to(request.user).select_related(
                "application__server", "created_by", "revoked_by"
            ),
            pk=pk,
        )
        history = Paginator(key.sessions.select_related("server").order_by("-started"), 25).get_page(
            request.GET.get("page")
        )
        now = timezone.now()
        context = {"key": key, "state": key.state(now), "display_state": key_display_state(key, now),
                   "history": history, "rotate_form": forms.RotateForm()}  # fmt: skip
        return render(request, "frontend/key_detail.html", context)


class KeyRotateView(RoleView):
    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        key = get_object_or_404(StreamKey, pk=pk)
        form = forms.RotateForm(request.POST)
        if not form.is_valid():
            messages.error(request, "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items()))
            return redirect("key-detail", pk=pk)
        try:
            issued = keys.rotate_key(key, self.actor(), timedelta(hours=form.cleaned_data["grace_hours"]))
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("key-detail", pk=pk)
        _show_once(request, "key", issued.key.pk, issued.secret, action="rotate")
        _wowza_message(request, issued.wowza)
        return redirect("key-issued", pk=issued.key.pk)


class SessionKickView(RoleView):
    """Operators drop a live publisher without revoking its key."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        session = get_object_or_404(PublishSession.objects.select_related("server"), pk=pk)
        if not session.is_live:
            messages.info(request, "That session had already ended.")
        else:
            kick = sessions.kick_session(session, self.actor(), PublishSession.EndReason.KICKED)
            messages.add_message(request, messages.SUCCESS if kick.outcome == "dropped" else messages.WARNING,
                                 _kick_message(kick))  # fmt: skip
        next_url = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
            next_url = reverse("home")
        return redirect(next_url)


class PublishSecurityView(RoleView):
    """Admins: addresses blocked by the brute-force limit, and recent refused publishes."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest) -> HttpResponse:
        rejects = PublishReject.objects.select_related("server").order_by("-created", "-id")
        if request.GET.get("addr"):
            rejects = rejects.filter(addr=request.GET["addr"][:64])
        context = {
            "blocked": publish_failures.blocked(),
            "limiter": publish_failures,
            "page": Paginator(rejects, 50).get_page(request.GET.get("page")),
        }
        return render(request, "frontend/publish_security.html", context)

    def post(self, request: HttpRequest) -> HttpResponse:
        addr = request.POST.get("addr", "")[:64]
        was_blocked = publish_failures.unblock(addr)
        audit.record(self.actor(), "unblock", object_type="publish.address", object_id=addr, object_repr=addr,
                     message="was blocked" if was_blocked else "was not blocked")  # fmt: skip
        messages.success(request, f"Unblocked {addr}." if was_blocked else f"{addr} was not blocked.")
        return redirect("publish-security")


class ServerHookSecretView(RoleView):
    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        server = inventory.rotate_hook_secret(get_object_or_404(Server, pk=pk), self.actor())
        messages.success(request, f"New callback secret for {server.name}: deploy its config within 24 h.")
        return redirect("server-detail", pk=pk)


class ServerConfigView(RoleView):
    """The nginx.conf Tally renders for an nginx-rtmp origin or edge (it carries the callback secret)."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        server = get_object_or_404(Server, pk=pk)
        try:
            text = rendering.render_origin_config(
                server, server.applications.all(), callback_base_url=settings.CALLBACK_BASE_URL, prefix_paths=False
            )
            error = ""
        except ValueError as exc:
            text, error = "", str(exc)
        return render(request, "frontend/server_config.html", {"server": server, "config": text, "error": error})


class UserListView(RoleView):
    """Admins: every account with its role; create one or edit one."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        user = get_object_or_404(get_user_model(), pk=pk) if pk else None
        initial: dict[str, Any] = {"is_active": True}
        if user is not None:
            role = role_of(user)
            initial = {"username": user.username, "email": user.email, "is_active": user.is_active,
                       "role": role.label if role else ""}  # fmt: skip
        return self._render(forms.UserForm(initial=initial), user)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        user = get_object_or_404(get_user_model(), pk=pk) if pk else None
        form = forms.UserForm(request.POST)
        if form.is_valid():
            try:
                saved = users.save_user(self.actor(), user=user, **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"Saved {saved.username}.")
                return redirect("user-list")
        return self._render(form, user, status=400)

    def _render(self, form: Any, editing: Any, status: int = 200) -> HttpResponse:
        rows = []
        for u in get_user_model().objects.prefetch_related("groups").order_by("username"):
            names = {g.name for g in u.groups.all()}  # prefetched: no query per user
            granted = max((r for r, name in GROUP_NAMES.items() if name in names), default=Role.NONE)
            u._tally_role = int(granted)  # type: ignore[attr-defined]  # role_of's cache, filled from the prefetch
            role = role_of(u)
            rows.append((u, role.label if role else "no access"))
        context = {"rows": rows, "form": form, "editing": editing}
        return render(self.request, "frontend/user_list.html", context, status=status)


class AuditListView(RoleView):
    read_role = Role.ADMIN

    def get(self, request: HttpRequest) -> HttpResponse:
        entries = AuditEntry.objects.order_by("-created", "-id")
        filters = {  # NUL cannot reach PostgreSQL, and no stored value contains one
            k: request.GET[k].replace("\x00", "")[:100]
            for k in ("object_type", "object_id", "action", "actor_name")
            if request.GET.get(k)
        }
        entries = entries.filter(**filters)
        page = Paginator(entries, 50).get_page(request.GET.get("page"))
        context = {"page": page, "filters": filters, "query_string": urlencode(filters)}
        return render(request, "frontend/audit_list.html", context)


class TokenListView(RoleView):
    read_role = Role.ADMIN

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(forms.TokenForm(initial={"owner": request.user.get_username()}))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = forms.TokenForm(request.POST)
        if not form.is_valid():
            return self._render(form, status=400)
        data = form.cleaned_data
        if data["expires_at"] and data["expires_at"] <= timezone.now():
            form.add_error("expires_at", "The expiry must be in the future.")
            return self._render(form, status=400)
        issued = tokens.issue_token(data["owner"], data["name"], data["role_ceiling"], self.actor(), data["expires_at"])
        _show_once(request, "token", issued.token.pk, issued.secret)
        return redirect("token-list")

    def _render(self, form: Any, status: int = 200) -> HttpResponse:
        token_rows = [(t, t.state()) for t in ApiToken.objects.select_related("owner")]
        once = self.request.session.pop(ONCE_SESSION_KEY, None)
        return render(
            self.request, "frontend/token_list.html", {"rows": token_rows, "form": form, "once": once}, status=status
        )


class TokenRevokeView(RoleView):
    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponseRedirect:
        token = tokens.revoke_token(get_object_or_404(ApiToken, pk=pk), self.actor())
        messages.success(request, f"Revoked token {token}.")
        return redirect("token-list")
