"""The repair plane: every candle the live stream did not deliver final is found and fetched from OKX REST.

A repair goes through these modules in order:

1. `detect`    — find what is missing: per series, only the open times past its watermark
                 (`Subscription.detected_through`), for every series at once; missing runs become `Gap` rows.
2. `confirms`  — the other half of the work: closed candles stored without their confirm push, read from a
                 partial index that holds only unconfirmed rows.
3. `reach`     — what OKX REST can serve (listing, retention, WebSocket-only bars, `1s` trades only) and through
                 which endpoint (each price kind has its own pair).
4. `schedule`  — one scheduler spends every candle endpoint's REST budget (trade, mark-price and index candles,
                 latest and older: six) in priority order (missed confirms, outage gaps, requested history,
                 old gaps), one page-sized request per unit of work.
5. `fill`      — one unit: fetch, write through `candles_upsert`, settle the gap (`candles.gaps` owns its states).
6. `report`    — the backlog by priority, its drain rate and ETA, for status, the admin and /metrics.

`rest` gives every caller the same REST client: the Redis-shared rate limiter and the request counters.
"""
