"""The fault harness's ledger table for the failover scenarios here (tests/faults/conftest.py);
tests/conftest.py prints it."""

from __future__ import annotations

from tests.faults.conftest import fault_report, fault_rows

__all__ = ["fault_report", "fault_rows"]
