"""Subscriptions: POST /subscribe, DELETE /subscribe/{symbol}, GET /subscriptions, GET/PATCH/DELETE
/subscriptions/{id}.

Every change goes through candles.subscriptions; saves and deletes nudge the collectors through their model
signals, bulk pauses through candles.signals.subscriptions_changed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.lookups import PRICES, unknown_timeframe
from candles.api.pagination import PAGE_PARAMS, page_bounds, paginate
from candles.api.params import SYMBOL_PATTERN, TIMEFRAME_PATTERN, Query, is_symbol
from candles.api.serializers import (
    SubscribeRequestSerializer,
    SubscribeResponseSerializer,
    SubscriptionPageSerializer,
    SubscriptionSerializer,
    SubscriptionUpdateSerializer,
    UnsubscribeResponseSerializer,
)
from candles.models import PriceKind, Subscription, SubscriptionStatus, Timeframe
from candles.price_series import PriceSeriesError, price_series_id
from candles.subscriptions import UnknownNames, subscription_update, subscriptions_create, subscriptions_pause
from okxproject.api_errors import ApiError

MAX_ID = 2**63 - 1


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def subscription_rows(subscriptions: list[Subscription]) -> list[dict]:
    """What SubscriptionSerializer(many=True) writes, built directly: a POST /subscribe of 1,000 symbols × 27
    bars answers 27,000 of them, and DRF's field machinery took 4 s of it (a test keeps the two equal)."""
    return [
        {"id": s.pk, "symbol": s.instrument.inst_id, "timeframe": s.timeframe.code, "price": s.instrument.price,
         "is_active": s.is_active,
         "status": s.status, "status_message": s.status_message, "backfill_from": _instant(s.backfill_from),
         "webhook_url": s.webhook_url, "webhook_failures": s.webhook_failures,
         "webhook_last_error": s.webhook_last_error, "rule": s.rule_id, "created_at": _instant(s.created_at),
         "updated_at": _instant(s.updated_at)}
        for s in subscriptions
    ]


def _subscriptions() -> object:
    return Subscription.objects.select_related("instrument", "timeframe")


class SubscribeView(APIView):
    @extend_schema(
        operation_id="subscribe",
        summary="Subscribe symbols × timeframes",
        description="Creates the missing pairs and resumes paused ones; pairs already active stay as they are "
                    "(idempotent). 201 when something was created or resumed, 200 when everything was already "
                    "active. Every symbol must be a known live instrument and every timeframe an active bar; "
                    "400 INVALID_SYMBOLS / INVALID_TIMEFRAMES lists all the bad ones. `price` (default trade) "
                    "subscribes the mark-price or index series instead: 1s with mark or index is 400 "
                    "INVALID_TIMEFRAMES, symbols that cannot have that price's candles 400 INVALID_PRICE (listed "
                    "in `invalid_symbols`).",
        request=SubscribeRequestSerializer,
        responses={201: SubscribeResponseSerializer, 200: SubscribeResponseSerializer},
        examples=[OpenApiExample("Two symbols in two bars", request_only=True,
                                 value={"symbols": ["BTC-USDT", "ETH-USDT"], "timeframes": ["1m", "1H"]}),
                  OpenApiExample("A swap's mark price", request_only=True,
                                 value={"symbols": ["BTC-USDT-SWAP"], "timeframes": ["1m"], "price": "mark"})],
        tags=["subscriptions"],
    )
    def post(self, request: Request) -> Response:
        serializer = SubscribeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = subscriptions_create(inst_ids=data["symbols"], bars=data["timeframes"],
                                          backfill_from=data["backfill_from"], webhook_url=data["webhook_url"],
                                          price=data["price"])
        except PriceSeriesError as exc:
            raise ApiError(str(exc), code=exc.code, details=exc.details) from None
        except UnknownNames as exc:
            symbols, timeframes = exc.unknown.get("instruments", []), exc.unknown.get("timeframes", [])
            raise ApiError(
                f"Not subscribable: {exc}. Symbols must be known live instruments, timeframes active bars "
                "(case-sensitive).",
                code="INVALID_SYMBOLS" if symbols else "INVALID_TIMEFRAMES",
                details={"invalid_symbols": symbols, "invalid_timeframes": timeframes},
            ) from None
        changed = bool(result.created or result.reactivated)
        body = {
            "created": len(result.created),
            "reactivated": len(result.reactivated),
            "unchanged": len(result.unchanged),
            "subscriptions": subscription_rows(result.subscriptions),
        }
        return Response(body, status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK)


class UnsubscribeView(APIView):
    @extend_schema(
        operation_id="unsubscribe",
        summary="Stop collecting a symbol (all its timeframes, or ?timeframe= one)",
        description="Pauses the active subscriptions of the symbol's `price` series (default trade); their rows "
                    "and candles stay, and POST /subscribe resumes them. 404 SUBSCRIPTION_NOT_FOUND when none is "
                    "active; 400 INVALID_PRICE for a price the symbol cannot have, INVALID_TIMEFRAMES for 1s with "
                    "mark or index.",
        parameters=[
            OpenApiParameter("symbol", {"type": "string", "pattern": f"^{SYMBOL_PATTERN}$"},
                             OpenApiParameter.PATH, description="OKX instrument id, exact.",
                             examples=[OpenApiExample("BTC-USDT", value="BTC-USDT")]),
            OpenApiParameter("timeframe", {"type": "string", "pattern": f"^{TIMEFRAME_PATTERN}$"},
                             description="Only this bar (case-sensitive); unknown: 400 INVALID_TIMEFRAMES."),
            OpenApiParameter("price", {"type": "string", "enum": list(PRICES), "default": "trade"},
                             description="Which series: trade (the default), mark or index."),
        ],
        responses={200: UnsubscribeResponseSerializer},
        tags=["subscriptions"],
    )
    def delete(self, request: Request, symbol: str) -> Response:
        query = Query(request)
        code = query.text("timeframe", max_length=16)
        price = query.choice("price", PRICES, PriceKind.TRADE)
        query.done()
        if code is not None and not Timeframe.objects.filter(code=code).exists():
            raise unknown_timeframe(code, status=400)
        if price != PriceKind.TRADE and is_symbol(symbol):
            _series_or_400(symbol, price, code)
        paused = subscriptions_pause(inst_id=symbol, bars=None if code is None else [code], price=price) \
            if is_symbol(symbol) else []
        if not paused:
            which = symbol if code is None else f"{symbol} {code}"
            if price != PriceKind.TRADE:
                which += f" ({price})"
            details = {"symbol": symbol, "timeframe": code} | ({"price": price} if price != PriceKind.TRADE else {})
            raise ApiError(f"No active subscription of {which}.", code="SUBSCRIPTION_NOT_FOUND", status=404,
                           details=details)
        return Response({"symbol": symbol, "paused": len(paused),
                         "subscriptions": SubscriptionSerializer(paused, many=True).data})


def _series_or_400(symbol: str, price: str, code: str | None) -> None:
    """The reads' 400s for a (symbol, price, bar) that names no series; a series not known yet is left to the
    404 of 'no active subscription'."""
    try:
        price_series_id(symbol, price, code or "1m")
    except PriceSeriesError as exc:
        if not exc.not_found:
            raise ApiError(str(exc), code=exc.code, details=exc.details) from None


class SubscriptionListView(APIView):
    @extend_schema(
        operation_id="subscriptions_list",
        summary="Subscriptions, filtered and paged",
        parameters=[
            OpenApiParameter("status", {"type": "string", "enum": list(SubscriptionStatus.values)},
                             description="Collection status set by the health task."),
            OpenApiParameter("active", {"type": "boolean"}, description="false: paused ones only."),
            OpenApiParameter("symbol", {"type": "string", "maxLength": 64}, description="Exact instrument id."),
            OpenApiParameter("timeframe", {"type": "string", "maxLength": 16}, description="Exact bar."),
            OpenApiParameter("price", {"type": "string", "enum": list(PRICES)},
                             description="Only this price's series (trade, mark, index); default: every kind."),
            *PAGE_PARAMS,
        ],
        responses={200: SubscriptionPageSerializer},
        tags=["subscriptions"],
    )
    def get(self, request: Request) -> Response:
        query = Query(request)
        state = query.choice("status", SubscriptionStatus.values)
        active = query.boolean("active")
        symbol = query.text("symbol", max_length=64)
        code = query.text("timeframe", max_length=16)
        price = query.choice("price", PRICES)
        limit, offset = page_bounds(query)
        query.done()
        subscriptions = _subscriptions().order_by("instrument__inst_id", "timeframe__display_order", "id")
        if state is not None:
            subscriptions = subscriptions.filter(status=state)
        if active is not None:
            subscriptions = subscriptions.filter(is_active=active)
        if symbol is not None:
            subscriptions = subscriptions.filter(instrument__inst_id=symbol)
        if code is not None:
            subscriptions = subscriptions.filter(timeframe__code=code)
        if price is not None:
            subscriptions = subscriptions.filter(instrument__price=price)
        page, items = paginate(request, subscriptions, limit, offset)
        return Response({**page, "results": SubscriptionSerializer(items, many=True).data})


ID_PARAM = OpenApiParameter("id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, OpenApiParameter.PATH)


class SubscriptionDetailView(APIView):
    def _get(self, pk: int) -> Subscription:
        subscription = _subscriptions().filter(pk=pk).first() if pk <= MAX_ID else None
        if subscription is None:
            raise ApiError(f"No subscription {pk}.", code="SUBSCRIPTION_NOT_FOUND", status=404,
                           details={"id": pk})
        return subscription

    @extend_schema(operation_id="subscriptions_retrieve", summary="One subscription", parameters=[ID_PARAM],
                   responses={200: SubscriptionSerializer}, tags=["subscriptions"])
    def get(self, request: Request, pk: int) -> Response:
        return Response(SubscriptionSerializer(self._get(pk)).data)

    @extend_schema(
        operation_id="subscriptions_update",
        summary="Pause or resume a subscription, change its webhook or history start",
        parameters=[ID_PARAM],
        request=SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer},
        tags=["subscriptions"],
    )
    def patch(self, request: Request, pk: int) -> Response:
        subscription = self._get(pk)
        serializer = SubscriptionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changes = {"backfill_from": data["backfill_from"]} if "backfill_from" in data else {}
        subscription_update(subscription=subscription, is_active=data.get("is_active"),
                            webhook_url=data.get("webhook_url"), **changes)
        return Response(SubscriptionSerializer(subscription).data)

    @extend_schema(
        operation_id="subscriptions_destroy",
        summary="Delete a subscription (its candles stay; its gap records go)",
        parameters=[ID_PARAM],
        responses={204: OpenApiResponse(description="Deleted.")},
        tags=["subscriptions"],
    )
    def delete(self, request: Request, pk: int) -> Response:
        self._get(pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
