"""The live path of a candle: the collector runtime, ingest, the Redis live buffer, flush, dead letters."""
