"""Neural-network building blocks: the selective scan (Mamba-1), the Mamba block and the shared layers."""

from hymate.nn.mamba import MambaBlock, MambaConfig, MambaState, RMSNorm
from hymate.nn.scan import (
    BACKENDS,
    available_backends,
    resolve_backend,
    selective_scan,
    selective_scan_step,
)

__all__ = [
    "BACKENDS",
    "MambaBlock",
    "MambaConfig",
    "MambaState",
    "RMSNorm",
    "available_backends",
    "resolve_backend",
    "selective_scan",
    "selective_scan_step",
]
