import pytest

from console import push


@pytest.fixture
def sent(monkeypatch):
    """Messages handed to the push queue, as (group, message)."""
    messages = []
    monkeypatch.setattr(push, "send_soon", lambda group, message: messages.append((group, message)))
    return messages
