"""OKX v5 protocol for candle collectors: messages, WebSocket client, REST client, rate limiting.

Pure asyncio and parsing; nothing here imports Django, Celery or the rest of okx-candles, so it can be
read, tested and published alone.
"""
