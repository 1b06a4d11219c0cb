"""The fault harness's ledger table for the failover scenarios here (tests/faults/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults import conftest as faults
from tests.faults.conftest import fault_report, fault_rows

__all__ = ["fault_report", "fault_rows"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(faults):  # else tests/faults prints it
        faults.pytest_terminal_summary(terminalreporter, config)
