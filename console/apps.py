from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        from console import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
