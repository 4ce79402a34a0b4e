"""The live stream, `ws://HOST/api/v1/stream`: stored candles from `since`, then every new version as it is written.

`feed` is the writing side (the write path publishes what it committed), `hub` the serving side (one per web
process), `series` and `subscriber` what a client subscribed to, `protocol` the messages, `consumer` the
WebSocket endpoint. docs/stream.md describes the contract.
"""
