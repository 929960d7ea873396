from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring import fleet
        from streams import events

        events.publish_stopped.connect(fleet.stream_stopped_by_callback, dispatch_uid="monitoring.stream_stopped")
