"""Fixtures for the nn tests: the C++ extension is built (or loaded from its cache) once per
session, and every test runs over each backend that can run here."""

from __future__ import annotations

import pytest

from hymate.nn import scan_cpu


@pytest.fixture(scope="session")
def cpp_extension():
    if scan_cpu.load_extension() is None:
        pytest.skip(f"C++ scan extension unavailable: {scan_cpu.build_error()}")
    return scan_cpu.load_extension()


@pytest.fixture(params=["reference", "cpp"])
def backend(request) -> str:
    if request.param == "cpp":
        request.getfixturevalue("cpp_extension")
    return request.param
