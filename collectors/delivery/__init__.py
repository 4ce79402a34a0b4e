"""Delivery of committed candles to the outside: webhooks."""
