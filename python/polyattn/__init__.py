"""polyattn: CPU attention kernels with flash-linear-attention's and FlashAttention's Python API.

numpy arrays and torch CPU tensors (float32, bfloat16, float16) go in and come out of the same
framework and type, through DLPack / the buffer protocol without copies where the layout
allows (any strides, e.g. head-first memory as a transposed view). Kernels run with the GIL
released on polyattn's thread pool: ``threads=`` on every function (default: every CPU this
process may use; ``set_num_threads`` changes the default; ``set_thread_runtime("openmp")`` runs
them on the OpenMP threads torch already has, which ``polyattn.torch`` selects on import).
Forward only (no autograd).
Bad arguments raise ValueError / TypeError naming the argument, before anything is written.

``polyattn.torch`` registers the same functions as torch custom ops and patches Hugging Face
transformers' CPU fallbacks (``polyattn.torch.patch_transformers()``).
"""

import operator

from ._arrays import get_num_threads, get_thread_runtime, set_num_threads, set_thread_runtime
from ._arrays import _C
from ._conv import causal_conv1d_fn, causal_conv1d_update, short_conv
from ._linear import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gdn,
    chunk_gla,
    chunk_kda,
    chunk_linear_attn,
    chunk_retention,
    chunk_simple_gla,
    fused_chunk_linear_attn,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_gdn,
    fused_recurrent_kda,
    parallel_based,
    retention_g_gamma,
)
from ._mamba2 import mamba_chunk_scan_combined, selective_state_update
from ._softmax import KVCache, flash_attn_func, flash_attn_varlen_func, sparse_attention

__version__ = "0.1.0"


def isa() -> str:
    """The instruction set polyattn's kernels dispatch to on this machine (e.g. 'avx512')."""
    return _C.isa()


def workspace_stats() -> dict:
    """What the process-wide workspace (the pack memory the softmax prefill reuses between calls;
    docs/conventions.md §5.8) holds and has done: a dict of ``retained_bytes`` and
    ``retained_blocks`` (idle memory kept for the next call), ``in_use_blocks`` (held by calls
    running now), ``reuses`` and ``allocations`` (requests served by retained memory / by new
    memory since the process started) and ``limit_bytes`` (the cap set_workspace_limit sets)."""
    return _C.workspace_stats()


def release_workspace() -> int:
    """Frees the memory the workspace retains between calls (blocks of calls running now are
    retained again when those return, within the limit). Returns the bytes freed."""
    return _C.release_workspace()


def set_workspace_limit(nbytes: int) -> None:
    """Caps the bytes the workspace retains between calls (default 256 MiB; at most 16 blocks);
    retained memory past the new cap is freed now, smallest blocks first. 0 retains nothing.
    Memory of calls running does not count: a call always gets what it needs."""
    try:
        n = operator.index(nbytes)
    except TypeError:
        raise TypeError(f"polyattn: argument 'nbytes': must be an int, got "
                        f"{type(nbytes).__name__}") from None
    if n < 0:
        raise ValueError(f"polyattn: argument 'nbytes': must be >= 0, got {n}")
    _C.set_workspace_limit(n)


__all__ = [
    "KVCache",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "chunk_gdn",
    "chunk_gla",
    "chunk_kda",
    "chunk_linear_attn",
    "chunk_retention",
    "chunk_simple_gla",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "fused_chunk_linear_attn",
    "fused_recurrent_gated_delta_rule",
    "fused_recurrent_gdn",
    "fused_recurrent_kda",
    "get_num_threads",
    "get_thread_runtime",
    "isa",
    "release_workspace",
    "mamba_chunk_scan_combined",
    "parallel_based",
    "retention_g_gamma",
    "selective_state_update",
    "set_num_threads",
    "set_thread_runtime",
    "set_workspace_limit",
    "short_conv",
    "sparse_attention",
    "workspace_stats",
]
