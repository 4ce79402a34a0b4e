"""Plumbing every part of the collectors uses: Redis keys, connections, locks."""
