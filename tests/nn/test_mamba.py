"""The Mamba block: configuration and initialisation, backends agree, padding cannot leak,
streaming steps equal the full forward, bfloat16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hymate.nn import MambaBlock, MambaConfig
from tests.nn.helpers import rel_err


def make_block(backend: str = "reference", dtype=torch.float32, seed: int = 0, **kw) -> MambaBlock:
    torch.manual_seed(seed)
    return MambaBlock(MambaConfig(d_model=24, d_state=8, scan_backend=backend, **kw)).to(dtype)


def test_config_defaults_and_reference_init():
    cfg = MambaConfig(d_model=40)
    assert (cfg.d_inner, cfg.dt_rank, cfg.d_state, cfg.d_conv) == (80, 3, 16, 4)
    with pytest.raises(ValueError, match="dt_rank"):
        MambaConfig(d_model=8, dt_rank=0)
    torch.manual_seed(0)
    block = MambaBlock(cfg)
    A = -torch.exp(block.A_log)
    torch.testing.assert_close(A, -torch.arange(1, 17.0).repeat(80, 1))
    torch.testing.assert_close(block.D, torch.ones(80))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= cfg.dt_min * (1 - 1e-4) and dt.max() <= cfg.dt_max * (1 + 1e-4)
    assert block.dt_proj.weight.abs().max() <= 3**-0.5
    assert block.conv1d.groups == 80 and block.conv1d.padding == (3,)
    assert block.in_proj.bias is None and block.conv1d.bias is not None


def test_shapes_and_residual_option():
    x = torch.randn(3, 11, 24)
    block = make_block()
    out = block(x)
    assert out.shape == x.shape
    block.config.residual = False
    torch.testing.assert_close(block(x) + x, out)


def test_cpp_and_reference_backends_agree_with_gradients(cpp_extension):
    x = torch.randn(2, 37, 24)
    results = []
    for backend in ("reference", "cpp"):
        block = make_block(backend)
        xi = x.clone().requires_grad_()
        out = block(xi, lengths=torch.tensor([37, 20]))
        out.square().sum().backward()
        grads = [xi.grad] + [p.grad for p in block.parameters()]
        results.append((out, grads))
    (ref_out, ref_grads), (out, grads) = results
    assert rel_err(out, ref_out) < 1e-5
    for g, rg in zip(grads, ref_grads, strict=True):
        assert rel_err(g, rg) < 1e-4


def test_right_padding_equals_unpadded_sequences(backend):
    block = make_block(backend)
    lengths = torch.tensor([13, 5, 1])
    x = torch.randn(3, 13, 24)
    x_padded = x.clone()
    for i, n in enumerate(lengths):
        x_padded[i, n:] = 100 * torch.randn(13 - n, 24)  # garbage in the padding
    out = block(x_padded, lengths=lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i, :n], block(x[i : i + 1, :n])[0], rtol=1e-5, atol=1e-5)
        # Padded positions are zeroed (the residual passes the padded input through).
        torch.testing.assert_close(out[i, n:], x_padded[i, n:])
    block.config.residual = False
    assert block(x_padded, lengths=lengths)[0, 13:].abs().sum() == 0
    assert block(x_padded, lengths=lengths)[1, 5:].abs().max() == 0


def test_padding_gets_no_gradient_and_mask_handles_left_padding(backend):
    block = make_block(backend, residual=False)
    x = torch.randn(2, 10, 24, requires_grad=True)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    mask[1, 7:] = False  # right padding
    out = block(x, mask=mask)
    out.sum().backward()
    assert x.grad[~mask].abs().max() == 0
    # Left-padded sequence equals the same events without the padding in front.
    alone = block(x[0:1, 4:].detach())
    torch.testing.assert_close(out[0, 4:], alone[0], rtol=1e-5, atol=1e-5)


def test_mask_and_lengths_errors():
    block, x = make_block(), torch.randn(2, 5, 24)
    with pytest.raises(ValueError, match="either mask or lengths"):
        block(x, mask=torch.ones(2, 5, dtype=torch.bool), lengths=torch.tensor([5, 5]))
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, length\] = \[2, 5\]"):
        block(x, mask=torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"lengths must have shape \[batch\] = \[2\]"):
        block(x, lengths=torch.tensor([5]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_equals_forward(dtype):
    block = make_block(dtype=dtype)
    x = torch.randn(2, 9, 24, dtype=dtype)
    full = block(x)
    state = block.allocate_inference_cache(batch_size=2)
    steps = torch.stack([block.step(x[:, t], state) for t in range(9)], dim=1)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(steps, full, rtol=tol, atol=tol)
    assert state.conv.shape == (2, 48, 3) and state.ssm.shape == (2, 48, 8)
    torch.testing.assert_close(state.conv, block.in_proj(block.norm(x[:, -3:]))[..., :48].transpose(1, 2))


def test_bfloat16_block_close_to_float32(backend):
    x = torch.randn(2, 30, 24)
    ref = make_block(backend)(x)
    out = make_block(backend, dtype=torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) < 3e-2


def test_dt_rank_auto_rounds_up():
    assert MambaConfig(d_model=17).dt_rank == math.ceil(17 / 16) == 2
