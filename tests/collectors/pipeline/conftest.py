"""Fixtures shared by the pipeline's tests."""

from __future__ import annotations

import pytest

from collectors.pipeline import backfill


@pytest.fixture
def full_detections(monkeypatch) -> list[int]:
    """Ids of the subscriptions that went down the full gap detection (`backfill.gaps_detect`), in call order."""
    called: list[int] = []
    detect = backfill.gaps_detect

    def recording(**kwargs):
        called.append(kwargs["subscription_id"])
        return detect(**kwargs)

    monkeypatch.setattr(backfill, "gaps_detect", recording)
    return called
