"""Subscription rules: GET/POST /rules, GET/PATCH/DELETE /rules/{id}.

Every change goes through candles.rules, which validates (the model's rules, shared with the admin and the CLI),
saves, materializes the subscriptions and nudges the collectors once after commit.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.pagination import PAGE_PARAMS, page_bounds, paginate
from candles.api.params import Query
from candles.api.serializers_rules import (
    MaterializedSerializer,
    RuleMatchSerializer,
    RuleOutcomeSerializer,
    RulePageSerializer,
    RuleSerializer,
    RuleWriteSerializer,
)
from candles.models import SubscriptionRule
from candles.rules import RuleOutcome, rule_create, rule_delete, rule_update
from okxproject.api_errors import ApiError

MAX_ID = 2**63 - 1


def _rules():
    return SubscriptionRule.objects.annotate(
        active_subscriptions=Count("subscriptions", filter=Q(subscriptions__is_active=True)),
    ).order_by("name")


def invalid_rule(exc: DjangoValidationError) -> ApiError:
    """The rule's validation errors as the API's 400: INVALID_TIMEFRAMES for unknown bars and for 1s with mark or
    index (as POST /subscribe says them), VALIDATION_ERROR with the errors by field otherwise."""
    errors = exc.error_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.error_list}
    for error in errors.get("bars", []):
        if error.code == "unknown_bars":
            return ApiError(f"Invalid rule: {error.message % error.params}", code="INVALID_TIMEFRAMES",
                            details={"invalid_timeframes": error.params["unknown"]})
        if error.code == "trade_only_bars":
            return ApiError(f"Invalid rule: {error.message % error.params}", code="INVALID_TIMEFRAMES",
                            details={"invalid_timeframes": error.params["trade_only"], "price": error.params["price"]})
    details = {name: [message for error in field_errors for message in error.messages]
               for name, field_errors in errors.items()}
    summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in details.items())
    return ApiError(f"Invalid rule: {summary}", code="VALIDATION_ERROR", details=details)


def _outcome(outcome: RuleOutcome) -> dict:
    return {
        "rule": RuleSerializer(_rules().get(pk=outcome.rule.pk)).data,
        "matches": RuleMatchSerializer(outcome.matches).data,
        "materialized": MaterializedSerializer(outcome.materialized).data,
        "warnings": outcome.warnings,
    }


RULE_EXAMPLES = [
    OpenApiExample("Every SWAP in 1m and 1H", request_only=True,
                   value={"name": "swaps", "inst_type": "SWAP", "bars": ["1m", "1H"]}),
    OpenApiExample("Quoted in USDT, all bars", request_only=True,
                   value={"name": "usdt", "quote_ccy": "USDT", "bars": "all"}),
    OpenApiExample("BTC-USDT in 1s", request_only=True,
                   value={"name": "btc-1s", "inst_id_pattern": "BTC-USDT", "bars": ["1s"]}),
    OpenApiExample("Every SWAP's mark price in 1m and 1H", request_only=True,
                   value={"name": "swap-marks", "price": "mark", "inst_type": "SWAP", "bars": ["1m", "1H"]}),
    OpenApiExample("Every USD index in 1m", request_only=True,
                   value={"name": "usd-indices", "price": "index", "quote_ccy": "USD", "bars": ["1m"]}),
]


class RuleListView(APIView):
    @extend_schema(operation_id="rules_list", summary="Subscription rules, paged", parameters=[*PAGE_PARAMS],
                   responses={200: RulePageSerializer}, tags=["rules"])
    def get(self, request: Request) -> Response:
        query = Query(request)
        limit, offset = page_bounds(query)
        query.done()
        page, items = paginate(request, _rules(), limit, offset)
        return Response({**page, "results": RuleSerializer(items, many=True).data})

    @extend_schema(
        operation_id="rules_create",
        summary="Declare a rule; its subscriptions are created at once",
        description="Instruments that are live and match every given filter (type, quote and settle currency, "
                    "instId glob) × the bars, in the series of the rule's `price` (trade by default; mark or "
                    "index). 201 with what it matches now and what materializing did. A rule "
                    "that matches no instrument now is saved (it waits for a listing) with a warning in "
                    "`warnings`. 400 VALIDATION_ERROR for a malformed rule (details by field; e.g. a mark rule of "
                    "SPOT, an index rule of SWAP), INVALID_TIMEFRAMES for unknown bars and for 1s with mark or "
                    "index.",
        request=RuleWriteSerializer, responses={201: RuleOutcomeSerializer}, examples=RULE_EXAMPLES,
        tags=["rules"],
    )
    def post(self, request: Request) -> Response:
        serializer = RuleWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            outcome = rule_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise invalid_rule(exc) from None
        return Response(_outcome(outcome), status=status.HTTP_201_CREATED)


ID_PARAM = OpenApiParameter("id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, OpenApiParameter.PATH)


class RuleDetailView(APIView):
    def _get(self, pk: int) -> SubscriptionRule:
        rule = _rules().filter(pk=pk).first() if pk <= MAX_ID else None
        if rule is None:
            raise ApiError(f"No rule {pk}.", code="RULE_NOT_FOUND", status=404, details={"id": pk})
        return rule

    @extend_schema(operation_id="rules_retrieve", summary="One rule", parameters=[ID_PARAM],
                   responses={200: RuleSerializer}, tags=["rules"])
    def get(self, request: Request, pk: int) -> Response:
        return Response(RuleSerializer(self._get(pk)).data)

    @extend_schema(
        operation_id="rules_update",
        summary="Change a rule; its subscriptions follow at once",
        description="Pairs it no longer matches end (paused, candles kept) unless another rule or an explicit "
                    "subscription holds them; new pairs are created. Same errors as POST /rules.",
        parameters=[ID_PARAM], request=RuleWriteSerializer(partial=True), responses={200: RuleOutcomeSerializer},
        tags=["rules"],
    )
    def patch(self, request: Request, pk: int) -> Response:
        rule = self._get(pk)
        serializer = RuleWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            outcome = rule_update(rule=rule, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise invalid_rule(exc) from None
        return Response(_outcome(outcome))

    @extend_schema(
        operation_id="rules_destroy",
        summary="Delete a rule; the subscriptions only it matched end (their candles stay)",
        parameters=[ID_PARAM], responses={204: OpenApiResponse(description="Deleted.")}, tags=["rules"],
    )
    def delete(self, request: Request, pk: int) -> Response:
        rule_delete(rule=self._get(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
