"""Make sure an admin user exists, so a fresh `make run` leads straight to a working admin login.

Idempotent: an existing superuser is left alone. The password comes from ADMIN_PASSWORD; without it a
random one is generated, printed once and kept in .local/admin-password (mode 0600) for later runs.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin superuser from ADMIN_USERNAME/ADMIN_PASSWORD if no superuser exists yet."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        password_file = Path(settings.BASE_DIR) / ".local" / "admin-password"
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            hint = f" (generated password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"admin user: {existing.get_username()}{hint}")
            return
        password = settings.ADMIN_PASSWORD
        if not password:
            password = secrets.token_urlsafe(12)
            password_file.parent.mkdir(exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n")
        User.objects.create_superuser(username=settings.ADMIN_USERNAME, email="", password=password)
        shown = "from ADMIN_PASSWORD" if settings.ADMIN_PASSWORD else f"{password}  (kept in {password_file})"
        self.stdout.write(self.style.SUCCESS(
            f"created admin user {settings.ADMIN_USERNAME!r}, password {shown}"
        ))
