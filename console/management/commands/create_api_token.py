"""Create an API token from the command line (prints the secret once)."""

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from console import audit, tokens
from console.roles import ROLE_CHOICES


class Command(BaseCommand):
    help = "Create an API token for a user and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Owner's username")
        parser.add_argument("--name", required=True, help="What the token is for")
        parser.add_argument("--role", default="viewer", choices=[c for c, _ in ROLE_CHOICES], help="Role ceiling")
        parser.add_argument("--expires-days", type=int, default=0, help="Expire after N days (0: never)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            owner = get_user_model().objects.get(username=options["user"], is_active=True)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No active user {options['user']!r}.") from None
        if options["expires_days"] < 0:
            raise CommandError("--expires-days must be 0 or more.")
        expires = timezone.now() + timedelta(days=options["expires_days"]) if options["expires_days"] else None
        issued = tokens.issue_token(owner, options["name"], options["role"], audit.Actor.system(), expires)
        self.stdout.write(issued.secret)
