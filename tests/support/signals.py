"""Subprocesses that a test stops with Ctrl-C."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """`preexec_fn` for a child that a test interrupts with SIGINT, as Ctrl-C does.

    A child inherits ignored signals, and Python installs its KeyboardInterrupt handler only where SIGINT is not
    ignored at start. A suite run as a background job of a shell without job control (`make test &`, nohup) has
    SIGINT ignored, and the child would never see the test's Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
