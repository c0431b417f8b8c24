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
    "mamba_chunk_scan_combined",
    "parallel_based",
    "retention_g_gamma",
    "selective_state_update",
    "set_num_threads",
    "set_thread_runtime",
    "short_conv",
    "sparse_attention",
]
