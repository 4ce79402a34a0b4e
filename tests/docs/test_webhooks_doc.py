"""The receiver's guide shows a body and a signature the code really produces."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from collectors.delivery.webhooks import SIGNATURE_HEADER, webhook_body, webhook_signature
from tests.conftest import build_row

DOC = (Path(__file__).resolve().parents[2] / "docs/webhooks.md").read_text()


def test_the_example_body_is_what_a_confirmed_candle_is_sent_as():
    body = re.search(r"^(\{\"symbol\".*\})$", DOC, re.M).group(1).encode()
    row = build_row(1_795_482_000_000, open=Decimal("43000.1"), high=Decimal("43100"), low=Decimal("42990.5"),
                    close=Decimal("43050.25"), vol=Decimal("12.5"), vol_ccy=Decimal("537500.5"),
                    vol_ccy_quote=Decimal("537500.5"))
    assert webhook_body(row) == body


def test_the_mark_price_example_is_what_a_confirmed_mark_candle_is_sent_as():
    body = re.search(r"^\s*(\{\"symbol\".*\"price\":\"mark\".*\})$", DOC, re.M).group(1).encode()
    row = build_row(1_795_482_000_000, inst_id="BTC-USDT-SWAP", open=Decimal("43010.2"), high=Decimal("43105.5"),
                    low=Decimal("42995.1"), close=Decimal("43051"), vol=None, vol_ccy=None, vol_ccy_quote=None,
                    price="mark")
    assert webhook_body(row) == body


def test_the_example_signature_matches_the_body_and_the_named_secret():
    body = re.search(r"^(\{\"symbol\".*\})$", DOC, re.M).group(1).encode()
    header = re.search(rf"^{SIGNATURE_HEADER}: (sha256=[0-9a-f]{{64}})$", DOC, re.M).group(1)
    assert webhook_signature(body, "change-me-webhook-secret") == header


def test_the_verification_snippet_accepts_the_example_and_refuses_a_changed_body():
    snippet = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)
    body = re.search(r"^(\{\"symbol\".*\})$", DOC, re.M).group(1).encode()
    header = webhook_signature(body, "change-me-webhook-secret")
    assert namespace["is_authentic"](body, header, "change-me-webhook-secret")
    assert not namespace["is_authentic"](body.replace(b"43050.25", b"43050.26"), header, "change-me-webhook-secret")
    assert not namespace["is_authentic"](body, "", "change-me-webhook-secret")
