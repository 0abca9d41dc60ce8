"""Moved to :mod:`services.common.chat_client` (the api service uses it too, and a
service never imports services/cli); kept so existing imports keep working."""

from services.common.chat_client import LIVENESS_INTERVAL_S, ChatClient

__all__ = ["LIVENESS_INTERVAL_S", "ChatClient"]
