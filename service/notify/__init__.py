"""Notifications of incidents: a webhook, Slack, Alertmanager and Grafana annotations, each
once per event."""

from service.notify.links import LinkBuilder, Links
from service.notify.notifier import Notifier, posted_as_test

__all__ = ["LinkBuilder", "Links", "Notifier", "posted_as_test"]
