"""Make sure an admin account exists (used by ``make run`` and the deploy scripts)."""

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from console.settings import env_secret, env_str


class Command(BaseCommand):
    help = (
        "Create the admin account. TALLY_ADMIN_USERNAME / TALLY_ADMIN_PASSWORD set it (and reset its password); "
        "without them, a first run creates 'admin' with a random password saved in var/admin-password."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = env_str("TALLY_ADMIN_USERNAME") or "admin"
        password = env_secret("TALLY_ADMIN_PASSWORD")
        password_file = settings.VAR_DIR / "admin-password"
        user = users.objects.filter(username=username).first()
        if password:
            user = user or users(username=username, email=env_str("TALLY_ADMIN_EMAIL"))
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(password)
            user.save()
            self.stdout.write(f"Log in as {username!r} with the password from TALLY_ADMIN_PASSWORD.")
            return
        if user is None and not users.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            users.objects.create_superuser(username=username, email=env_str("TALLY_ADMIN_EMAIL"), password=password)
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            self.stdout.write(f"Created admin {username!r} with password {password} (also saved in {password_file}).")
        elif password_file.exists():
            self.stdout.write(f"Log in as {username!r}; the generated password is in {password_file}.")
        else:
            self.stdout.write("An admin account exists; log in with its password.")
