"""The dead-letter list: refused frames, newest first, and re-ingesting them once the cause is fixed."""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from collectors.admin_common import REDIS_DOWN, redis_notice, screen_redis
from collectors.live.deadletters import dead_letters_count, dead_letters_newest, dead_letters_reingest
from collectors.shared.connections import pipeline_keys

logger = logging.getLogger(__name__)

DEAD_LETTERS_PER_PAGE = 100

# --- dead letters --------------------------------------------------------------------------------------


def dead_letters_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The newest dead letters with their raw frame and reason; POST re-ingests the selected ones."""
    can_reingest = request.user.has_perm("candles.add_candle")
    keys = pipeline_keys()
    if request.method == "POST":
        if not can_reingest:
            raise PermissionDenied
        ids = request.POST.getlist("letter")
        if not ids:
            messages.warning(request, "Select the dead letters to re-ingest.")
        else:
            try:
                result = dead_letters_reingest(redis=screen_redis(), keys=keys, ids=ids)
            except REDIS_DOWN as exc:
                messages.error(request, redis_notice(exc))
            else:
                level = messages.SUCCESS if not result.still_invalid else messages.WARNING
                reasons = "; ".join(dict.fromkeys(reason for _, reason in result.still_invalid[:5]))
                messages.add_message(request, level, f"{result}{': ' + reasons if reasons else ''}")
        return HttpResponseRedirect(request.get_full_path())

    try:
        offset = max(0, int(request.GET.get("offset", 0)))
    except ValueError:
        offset = 0
    context = {**site.each_context(request), "title": "Dead letters", "can_reingest": can_reingest,
               "offset": offset, "per_page": DEAD_LETTERS_PER_PAGE, "pipeline_error": None}
    try:
        redis = screen_redis()
        context["total"] = dead_letters_count(redis, keys)
        context["letters"] = dead_letters_newest(redis, keys, limit=DEAD_LETTERS_PER_PAGE, offset=offset)
    except REDIS_DOWN as exc:
        context.update(total=None, letters=[], pipeline_error=redis_notice(exc))
    total = context["total"] or 0
    context["first_shown"], context["last_shown"] = offset + 1, offset + len(context["letters"])
    context["newer_offset"] = max(0, offset - DEAD_LETTERS_PER_PAGE) if offset else None
    context["older_offset"] = offset + DEAD_LETTERS_PER_PAGE if offset + DEAD_LETTERS_PER_PAGE < total else None
    return TemplateResponse(request, "admin/pipeline/dead_letters.html", context)
