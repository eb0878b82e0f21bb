"""Every code of planfix-api.md has a class that says what the caller does."""

from __future__ import annotations

import pytest

from notifier.planfix.errors import ERROR_CODES, ErrorClass, PlanfixApiError

EXPECTED = {
    "0000": ErrorClass.TRANSIENT, "0001": ErrorClass.FATAL_CONFIG, "0002": ErrorClass.FATAL_CONFIG,
    "0003": ErrorClass.BUG, "0004": ErrorClass.FATAL_CONFIG, "0005": ErrorClass.TRANSIENT,
    "0006": ErrorClass.FATAL_CONFIG, "0007": ErrorClass.QUOTA, "0008": ErrorClass.FATAL_CONFIG,
    "0009": ErrorClass.BUG, "0010": ErrorClass.FATAL_CONFIG, "0011": ErrorClass.TRANSIENT,
    "0012": ErrorClass.FATAL_CONFIG, "0014": ErrorClass.FATAL_CONFIG,
    "0020": ErrorClass.FATAL_CONFIG, "0021": ErrorClass.BUG, "0022": ErrorClass.FATAL_CONFIG,
    "0023": ErrorClass.FATAL_CONFIG, "0024": ErrorClass.FATAL_CONFIG,
    "1001": ErrorClass.FATAL_CONFIG, "3001": ErrorClass.TASK, "3008": ErrorClass.TASK,
    "3014": ErrorClass.TRANSIENT,
}  # fmt: skip


def test_every_documented_code_is_known() -> None:
    assert set(ERROR_CODES) == set(EXPECTED)


@pytest.mark.parametrize(("code", "error_class"), sorted(EXPECTED.items()))
def test_code_maps_to_class(code: str, error_class: ErrorClass) -> None:
    error = PlanfixApiError(code, method="task.get")
    assert error.error_class is error_class
    assert error.code == code
    assert code in str(error) and "task.get" in str(error)


def test_wrong_data_centre_names_the_endpoints() -> None:
    assert "api.planfix.com" in str(PlanfixApiError("0024"))
