"""The admin site is okx-candles' own AdminSite subclass, installed as Django's default site: nothing is patched
onto an instance, every `@admin.register` lands on it, and its index is the pipeline dashboard."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from candles.models import Gap, Instrument, Subscription
from collectors.admin import PipelineGapAdmin, PipelineInstrumentAdmin, PipelineSubscriptionAdmin
from collectors.admin_site import PipelineAdminSite


def test_the_default_site_is_the_pipeline_site_with_nothing_patched_onto_the_instance():
    assert isinstance(admin.site, PipelineAdminSite)
    own = vars(admin.site._wrapped)  # the site behind Django's lazy `admin.site`
    assert "index" not in own
    assert "get_urls" not in own
    assert admin.site.site_header == "okx-candles"


def test_every_registration_lands_on_the_one_site_with_the_pipeline_screens_in_place():
    registry = admin.site._registry
    assert isinstance(registry[Subscription], PipelineSubscriptionAdmin)
    assert isinstance(registry[Instrument], PipelineInstrumentAdmin)
    assert isinstance(registry[Gap], PipelineGapAdmin)


def test_the_pipeline_pages_are_urls_of_the_site():
    assert reverse("admin:pipeline_dashboard") == "/admin/pipeline/"
    assert reverse("admin:pipeline_dead_letters") == "/admin/pipeline/dead-letters/"


@pytest.mark.django_db
def test_the_index_is_the_dashboard(staff_client, keys):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert 'id="tile-collectors"' in response.content.decode()
