"""Fixtures for the nn tests: the C++ extension is built (or loaded from its cache) once per
session, and every test runs over each backend that can run here: the reference, the C++ kernel
at the CPU's best vector path (``cpp``), and the kernel's other paths this CPU can run
(``cpp:avx2``, ``cpp:generic``); a path the CPU lacks is skipped with the reason."""

from __future__ import annotations

import pytest

from hymate.nn import scan_cpu


@pytest.fixture(scope="session")
def cpp_extension():
    if scan_cpu.load_extension() is None:
        pytest.skip(f"C++ scan extension unavailable: {scan_cpu.build_error()}")
    return scan_cpu.load_extension()


def _other_isas() -> list[str]:
    best = scan_cpu.cpu_isas()[0]
    return [f"cpp:{isa}" for isa in scan_cpu.ISAS if isa != best]


@pytest.fixture(params=["reference", "cpp", *_other_isas()])
def backend(request) -> str:
    if request.param == "cpp":
        request.getfixturevalue("cpp_extension")
    elif request.param.startswith("cpp:"):
        isa = request.param.partition(":")[2]
        if isa not in scan_cpu.cpu_isas():
            pytest.skip(f"this CPU cannot run the {isa} path (it can run {', '.join(scan_cpu.cpu_isas())})")
        if scan_cpu.load_extension(isa) is None:
            pytest.skip(f"C++ scan extension ({isa}) unavailable: {scan_cpu.build_error(isa)}")
    return request.param
