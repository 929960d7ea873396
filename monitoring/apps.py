from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring import alerting, fleet
        from streams import deploys, events

        # In this order: the stream leaves the live list, then the drop is judged.
        events.publish_stopped.connect(fleet.stream_stopped_by_callback, dispatch_uid="monitoring.stream_stopped")
        events.publish_stopped.connect(alerting.on_publish_stopped, dispatch_uid="monitoring.stream_dropped")
        deploys.config_deployed.connect(alerting.on_config_deployed, dispatch_uid="monitoring.config_deployed")
