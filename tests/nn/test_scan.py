"""Every scan backend against the float64 reference: outputs, all gradients, gradcheck, padding,
recurrent steps, bfloat16, backend selection and input errors."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from hymate.nn import available_backends, resolve_backend, scan_cpu, selective_scan, selective_scan_step
from hymate.nn.scan import ENV_VAR
from tests.nn.helpers import random_scan_inputs, rel_err

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# (batch, dim, length, d_state): length 1, odd lengths, dim not a multiple of 16 (partial lane
# groups), d_state not a multiple of 16, lengths that cross checkpoint chunks.
SHAPES = [(2, 4, 1, 3), (2, 37, 33, 16), (3, 16, 70, 7), (1, 130, 129, 16), (2, 20, 300, 5)]
# (with_d, with_z, with_bias, delta_softplus)
OPTIONS = [
    (True, True, True, True),
    (False, False, False, True),
    (True, False, True, False),
    (False, True, False, False),
]


def outputs_and_grads(inputs, backend, delta_softplus, dtype, device="cpu"):
    leaves = {k: None if v is None else v.to(device, dtype).requires_grad_() for k, v in inputs.items()}
    out = selective_scan(**leaves, delta_softplus=delta_softplus, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(out, [leaves[k] for k in present], grad_out.to(device, dtype))
    return out.cpu(), {k: g.cpu() for k, g in zip(present, grads, strict=True)}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "D{}-z{}-bias{}-softplus{}".format(*map(int, o)))
def test_backend_matches_float64_reference(backend, shape, options):
    with_d, with_z, with_bias, softplus = options
    inputs = random_scan_inputs(*shape, with_d=with_d, with_z=with_z, with_bias=with_bias, positive_delta=not softplus)
    out, grads = outputs_and_grads(inputs, backend, softplus, torch.float32)
    ref_out, ref_grads = outputs_and_grads(inputs, "reference", softplus, torch.float64)
    assert out.dtype == torch.float32 and out.shape == ref_out.shape
    assert rel_err(out, ref_out) < 1e-5
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        if name == "A" and shape[2] == 1:  # dA = 0 exactly at length 1 (no previous state)
            assert grad.abs().max() == 0 and ref_grads[name].abs().max() == 0
            continue
        assert rel_err(grad, ref_grads[name]) < 1e-5, name


@pytest.mark.parametrize("softplus", [True, False])
def test_gradcheck_float64(backend, softplus):
    inputs = random_scan_inputs(2, 3, 9, 4, dtype=torch.float64, positive_delta=not softplus, seed=3)
    leaves = [inputs[k].requires_grad_() for k in NAMES]

    def fn(*args):
        return selective_scan(*args, delta_softplus=softplus, backend=backend)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5)


def test_last_state_matches_reference(backend):
    inputs = random_scan_inputs(2, 19, 45, 6)
    out, last = selective_scan(**inputs, return_last_state=True, backend=backend)
    ref_out, ref_last = selective_scan(
        **{k: v.double() for k, v in inputs.items()}, return_last_state=True, backend="reference"
    )
    assert last.shape == (2, 19, 6)
    assert rel_err(last, ref_last) < 1e-5 and rel_err(out, ref_out) < 1e-5


def test_right_padding_does_not_change_valid_outputs(backend):
    lengths = [23, 9, 1]
    inputs = random_scan_inputs(3, 18, 23, 16, seed=5)
    out = selective_scan(**inputs, backend=backend)
    for i, n in enumerate(lengths):
        alone = {k: v for k, v in inputs.items()}
        for k in ("u", "delta", "z", "B", "C"):
            alone[k] = inputs[k][i : i + 1, :, :n]
        # The padded tail of sequence i held other values; the valid prefix must not care.
        out_alone = selective_scan(**alone, backend=backend)
        torch.testing.assert_close(out[i : i + 1, :, :n], out_alone, rtol=1e-6, atol=1e-6)


def test_padding_values_do_not_leak(backend):
    inputs = random_scan_inputs(2, 16, 40, 8, seed=6)
    garbage = {k: v.clone() if v is not None else None for k, v in inputs.items()}
    for k in ("u", "delta", "z", "B", "C"):
        garbage[k][:, :, 25:] = 1e3 * torch.randn_like(garbage[k][:, :, 25:])
    out = selective_scan(**inputs, backend=backend)
    out_garbage = selective_scan(**garbage, backend=backend)
    torch.testing.assert_close(out[..., :25], out_garbage[..., :25], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_equals_scan(dtype):
    inputs = random_scan_inputs(2, 12, 17, 5, dtype=dtype, seed=7)
    out, last = selective_scan(**inputs, return_last_state=True, backend="reference")
    state = torch.zeros(2, 12, 5, dtype=dtype)
    steps = []
    for t in range(17):
        y, state = selective_scan_step(
            state,
            inputs["u"][..., t],
            inputs["delta"][..., t],
            inputs["A"],
            inputs["B"][..., t],
            inputs["C"][..., t],
            inputs["D"],
            inputs["z"][..., t],
            inputs["delta_bias"],
        )
        steps.append(y)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(torch.stack(steps, -1), out, rtol=tol, atol=tol)
    torch.testing.assert_close(state, last, rtol=tol, atol=tol)


def test_bfloat16_runs_and_is_close_to_float32(backend):
    inputs = random_scan_inputs(2, 32, 50, 16, seed=8)
    bf16 = {k: v.bfloat16().requires_grad_() for k, v in inputs.items()}
    out = selective_scan(**bf16, backend=backend)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.bfloat16 for v in bf16.values())
    # Same bf16-rounded inputs in float32: only the bf16 output rounding remains.
    ref = selective_scan(**{k: v.detach().float() for k, v in bf16.items()}, backend="reference")
    assert rel_err(out.float(), ref) < 1e-2


def test_backends_listed_and_auto_picks_cpp_on_cpu(cpp_extension, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert {"reference", "cpp"} <= set(available_backends())
    assert resolve_backend("auto", torch.device("cpu")) == "cpp"


def test_env_var_overrides_auto_but_not_an_explicit_backend(cpp_extension, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    assert resolve_backend("cpp", torch.device("cpu")) == "cpp"
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="unknown scan backend 'nonsense'"):
        resolve_backend("auto", torch.device("cpu"))


def test_backend_errors():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="unknown scan backend 'fast'"):
        resolve_backend("fast", cpu)
    with pytest.raises(ValueError, match="'cuda' needs CUDA tensors"):
        resolve_backend("cuda", cpu)
    with pytest.raises(ValueError, match="'cpp' needs CPU tensors"):
        resolve_backend("cpp", torch.device("meta"))
    with pytest.raises(ValueError, match="'cpp:sse4': this CPU runs the paths"):
        resolve_backend("cpp:sse4", cpu)
    with pytest.raises(ValueError, match="'cpp:generic' needs CPU tensors"):
        resolve_backend("cpp:generic", torch.device("meta"))


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension

    def broken_load(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(scan_cpu, "_ext", {})
    monkeypatch.setattr(scan_cpu, "_error", {})
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken_load)
    monkeypatch.delenv(ENV_VAR, raising=False)
    inputs = random_scan_inputs(1, 4, 6, 3)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        out = selective_scan(**inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out_again = selective_scan(**inputs)
    torch.testing.assert_close(out, out_again)
    torch.testing.assert_close(out, selective_scan(**inputs, backend="reference"))
    assert "cpp" not in available_backends()
    with pytest.raises(RuntimeError, match="'cpp' is unavailable: RuntimeError: no compiler"):
        selective_scan(**inputs, backend="cpp")


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("u", torch.zeros(2, 4), r"u must have shape \[batch, dim, length\]"),
        ("delta", torch.zeros(2, 4, 7), r"delta must have shape \[batch, dim, length\] = \[2, 4, 6\]"),
        ("A", torch.zeros(5, 3), r"A must have shape \[dim, state\] = \[4, 3\]"),
        ("B", torch.zeros(2, 6, 3), r"B must have shape \[batch, state, length\] = \[2, 3, 6\]"),
        ("C", torch.zeros(1, 3, 6), r"C must have shape \[batch, state, length\] = \[2, 3, 6\]"),
        ("D", torch.zeros(3), r"D must have shape \[dim\] = \[4\]"),
        ("z", torch.zeros(2, 4, 5), r"z must have shape \[batch, dim, length\]"),
        ("delta_bias", torch.zeros(4, 1), r"delta_bias must have shape \[dim\] = \[4\]"),
        ("u", torch.zeros(2, 4, 6, dtype=torch.int64), r"u must be a floating tensor"),
        ("B", torch.zeros(2, 3, 6, device="meta"), r"B is on meta but u is on cpu"),
    ],
)
def test_input_errors_name_the_argument(name, bad, message):
    inputs = random_scan_inputs(2, 4, 6, 3)
    inputs[name] = bad
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs, backend="reference")


def test_step_shape_error():
    with pytest.raises(ValueError, match=r"B must have shape \[batch, state\] = \[2, 3\]"):
        selective_scan_step(
            torch.zeros(2, 4, 3),
            torch.zeros(2, 4),
            torch.zeros(2, 4),
            torch.zeros(4, 3),
            torch.zeros(2, 4),
            torch.zeros(2, 3),
        )


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("mamba_ssm") is None,
    reason="needs a CUDA GPU and mamba_ssm",
)
def test_cuda_backend_matches_reference():
    inputs = random_scan_inputs(2, 64, 100, 16)
    assert resolve_backend("auto", torch.device("cuda")) == "cuda"
    out, grads = outputs_and_grads(inputs, "cuda", True, torch.float32, device="cuda")
    ref_out, ref_grads = outputs_and_grads(inputs, "reference", True, torch.float64)
    assert rel_err(out, ref_out) < 1e-4
    for name in NAMES:
        assert rel_err(grads[name], ref_grads[name]) < 1e-3, name


def test_cpp_output_cache_reuses_blocks_without_mixing_results(cpp_extension):
    # 2 x 64 x 2100 float32 = 1.03 MiB per tensor: above the cache's 1 MiB threshold.
    scan_cpu.clear_cache()
    inputs = random_scan_inputs(2, 64, 2100, 16, seed=11)
    ref_out, ref_grads = outputs_and_grads(inputs, "reference", True, torch.float64)
    held_out, held_grads = outputs_and_grads(inputs, "cpp", True, torch.float32)
    other = random_scan_inputs(2, 64, 2100, 16, seed=12)
    for _ in range(3):  # reuses the cached blocks; the tensors still held must not change
        out, grads = outputs_and_grads(inputs, "cpp", True, torch.float32)
        outputs_and_grads(other, "cpp", True, torch.float32)
        assert scan_cpu.cache_info()[0] > 0  # the freed outputs and gradients went to the cache
        assert torch.equal(out, held_out)
        assert all(torch.equal(grads[k], held_grads[k]) for k in grads)
    assert rel_err(held_out, ref_out) < 1e-5
    assert all(rel_err(held_grads[k], ref_grads[k]) < 1e-5 for k in ref_grads)
    # A transposed (channel-contiguous) input gives outputs in the same memory layout.
    u = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)
    out = selective_scan(**{**inputs, "u": u}, backend="cpp")
    assert out.stride() == u.stride()
    torch.testing.assert_close(out, held_out, rtol=0, atol=0)
    scan_cpu.clear_cache()
    assert scan_cpu.cache_info()[0] == 0


def test_first_build_says_so_and_a_built_kernel_loads_quietly(monkeypatch, tmp_path, capsys):
    import torch.utils.cpp_extension

    calls = []

    def fake_load(name, build_directory, **kwargs):
        calls.append(kwargs["extra_cflags"])
        (Path(build_directory) / f"{name}.so").write_bytes(b"")  # what a finished build leaves
        return object()

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    for _ in range(2):
        monkeypatch.setattr(scan_cpu, "_ext", {})
        scan_cpu.load_extension("generic")
    err = capsys.readouterr().err
    assert err.count("building the CPU scan kernel (generic path") == 1 and err.count("kernel built in") == 1
    assert len(calls) == 2 and "-DHYMATE_SCAN_ISA_LEVEL=0" in calls[0]


def test_build_name_follows_the_source_content_not_its_path():
    code = scan_cpu._SOURCE.read_bytes()
    assert scan_cpu.build_name(code) == scan_cpu.build_name(bytes(code))
    assert scan_cpu.build_name(code) != scan_cpu.build_name(code + b"\\n// changed")
    assert scan_cpu.build_name(code, "avx2") != scan_cpu.build_name(code, "generic")
    name = scan_cpu.build_name(code)
    with pytest.MonkeyPatch.context() as m:  # another environment (torch, Python) gets its own build
        m.setattr(scan_cpu, "_toolchain_tag", lambda: "torch 9.9 at /elsewhere")
        assert scan_cpu.build_name(code) != name
    name, staged = scan_cpu._staged_source("generic")
    assert staged.read_bytes() == code and staged.parent.name == name


def test_a_second_checkout_and_a_second_process_reuse_the_first_build(tmp_path):
    """The real build, loaded from a process whose checkout lives elsewhere (another clone, another
    working directory): no rebuild, no message, the same library file, untouched. Its name has no
    path in it, and the source is staged into the build folder, so ninja sees the same command."""
    import os
    import subprocess
    import sys

    isa = scan_cpu.requested_isa()
    if scan_cpu.load_extension(isa) is None:
        pytest.skip(f"C++ scan extension unavailable: {scan_cpu.build_error(isa)}")
    name, staged = scan_cpu._staged_source(isa)
    library = next(staged.parent.glob(f"{name}*.so"))
    before = library.stat().st_mtime_ns
    elsewhere = tmp_path / "another-clone" / "csrc" / scan_cpu._SOURCE.name
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(scan_cpu._SOURCE.read_bytes())
    code = ("from pathlib import Path; from hymate.nn import scan_cpu; "
            f"scan_cpu._SOURCE = Path({str(elsewhere)!r}); print(scan_cpu.load_extension({isa!r}).__file__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert "building the CPU scan kernel" not in done.stderr and "kernel built in" not in done.stderr, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]).resolve() == library.resolve()
    assert library.stat().st_mtime_ns == before  # not relinked either


def test_nan_in_delta_propagates_as_in_the_reference(backend):
    # x86 min / max return their second operand for a NaN: a NaN delta must not become finite.
    inputs = random_scan_inputs(2, 20, 40, 16, seed=21)
    inputs["delta"][0, 3, 10] = float("nan")
    inputs["delta"][1, 17, 0] = float("nan")
    with torch.no_grad():
        out = selective_scan(**inputs, delta_softplus=True, backend=backend)
        ref = selective_scan(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True, backend="reference")
    assert ref.isnan().any() and torch.equal(out.isnan(), ref.isnan())
    assert (out.isnan().sum(-1) > 0).sum() == 2  # only the two channels that read a NaN


def test_each_build_reports_its_vector_path(cpp_extension, monkeypatch):
    monkeypatch.delenv(scan_cpu.ISA_ENV, raising=False)
    assert cpp_extension.isa() == scan_cpu.cpu_isas()[0] == scan_cpu.isa()
    for isa in scan_cpu.cpu_isas():
        assert scan_cpu.load_extension(isa).isa() == isa


def test_vector_path_requests_are_checked(monkeypatch):
    from hymate.errors import HymateError

    monkeypatch.delenv(scan_cpu.ISA_ENV, raising=False)
    with pytest.raises(HymateError, match="'sse4': choose one of avx512, avx2, generic"):
        scan_cpu.requested_isa("sse4")
    monkeypatch.setenv(scan_cpu.ISA_ENV, "generic")
    assert scan_cpu.requested_isa() == "generic"
    monkeypatch.setattr(scan_cpu, "_cpu_flags", lambda: {"avx2", "sse2"})  # AVX2 without FMA
    assert scan_cpu.cpu_isas() == ("generic",)
    with pytest.raises(HymateError, match="'avx2': this CPU cannot run it"):
        scan_cpu.requested_isa("avx2")
    monkeypatch.setattr(scan_cpu, "_cpu_flags", lambda: {"avx512f", "avx2", "fma"})
    assert scan_cpu.cpu_isas() == ("avx512", "avx2", "generic")
