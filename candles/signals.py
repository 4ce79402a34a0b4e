"""Signals candles sends about its data, for whoever collects it (candles itself imports no collector)."""

from django.dispatch import Signal

# Sent after commit when subscriptions changed without a model save (bulk updates such as admin actions).
subscriptions_changed = Signal()
