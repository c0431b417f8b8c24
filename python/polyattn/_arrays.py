"""Array plumbing shared by the public functions: numpy and torch CPU tensors in, outputs
allocated in the caller's framework, the private ABI of the compiled module (_polyattn).

Element types of activations: float32, bfloat16 (torch.bfloat16, or ml_dtypes.bfloat16 for
numpy, passed to the module as a uint16 bit view), float16. Gates, beta and states are float32
(converted when given in another type; in-place state pools must already be float32).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from . import _polyattn as _C  # noqa: F401  (re-exported for the other modules)

_ACT_DTYPES = ("float32", "bfloat16", "float16")
_default_threads = 0  # 0: every CPU this process may run on


def set_num_threads(n: int | None) -> None:
    """Default thread count of every function's ``threads=`` argument (None: all CPUs)."""
    global _default_threads
    if n is not None and int(n) < 1:
        raise ValueError("polyattn: argument 'n': must be >= 1 or None")
    _default_threads = 0 if n is None else int(n)


def set_thread_runtime(runtime: str) -> str:
    """Where kernels run their work items: ``"pool"``, polyattn's own thread pool (the default),
    or ``"openmp"``, the OpenMP runtime another library already loaded in this process (torch's
    libgomp), so that polyattn's calls inside a model use the framework's worker threads
    instead of a second set that competes with them for the cores (``polyattn.torch`` selects it
    on import). With ``"openmp"`` the default thread count is the runtime's
    (``torch.set_num_threads``). Returns the runtime's library path ("" for the pool); raises
    RuntimeError when no OpenMP runtime is loaded."""
    if runtime == "pool":
        return _C.use_openmp_runtime(False)
    if runtime != "openmp":
        raise ValueError(f"polyattn: argument 'runtime': must be 'pool' or 'openmp', got {runtime!r}")
    library = _C.use_openmp_runtime(True)
    if not library:
        raise RuntimeError("polyattn: no OpenMP runtime is loaded in this process "
                           "(import torch first); the thread pool stays in use")
    return library


def get_thread_runtime() -> str:
    return "openmp" if _C.openmp_max_threads() > 0 else "pool"


def get_num_threads() -> int:
    if _default_threads:
        return _default_threads
    omp = _C.openmp_max_threads()
    if omp > 0:
        return omp
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_arg(threads) -> int:
    if threads is None:
        return get_num_threads()
    if int(threads) < 1:
        raise ValueError(f"polyattn: argument 'threads': must be >= 1, got {threads}")
    return int(threads)


def _torch():
    return sys.modules.get("torch")


def is_torch(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def framework(name: str, x) -> str:
    if isinstance(x, np.ndarray):
        return "numpy"
    if is_torch(x):
        if x.device.type != "cpu":
            raise ValueError(
                f"polyattn: argument '{name}': is on device {x.device}; polyattn runs on the CPU"
            )
        return "torch"
    raise TypeError(
        f"polyattn: argument '{name}': expected a numpy array or a torch tensor, "
        f"got {type(x).__name__}"
    )


def dtype_name(x) -> str:
    if is_torch(x):
        return str(x.dtype).replace("torch.", "")
    return x.dtype.name


def check_act(name: str, x, fw: str | None = None):
    """An activation (q, k, v, ...): numpy or torch CPU, fp32 / bf16 / fp16; returns it."""
    f = framework(name, x)
    if fw is not None and f != fw:
        raise TypeError(
            f"polyattn: argument '{name}': is a {f} array but q is a {fw} array; "
            "pass arrays of one framework"
        )
    if dtype_name(x) not in _ACT_DTYPES:
        raise TypeError(
            f"polyattn: argument '{name}': element type must be float32, bfloat16 or float16, "
            f"got {dtype_name(x)}"
        )
    return x


def check_ndim(name: str, x, ndim: int, layout: str):
    if x.ndim != ndim:
        raise ValueError(
            f"polyattn: argument '{name}': expected {ndim} dimensions {layout}, "
            f"got shape {list(x.shape)}"
        )


def same_dtype(names, arrays):
    d0 = dtype_name(arrays[0])
    for n, a in zip(names[1:], arrays[1:]):
        if dtype_name(a) != d0:
            raise TypeError(
                f"polyattn: argument '{n}': is {dtype_name(a)} but {names[0]} is {d0}: "
                "they must have the same element type"
            )


def raw(x):
    """What the module receives: torch tensors detached (forward only), numpy bf16 as uint16."""
    if x is None:
        return None
    if is_torch(x):
        return x.detach() if x.requires_grad else x
    if x.dtype.name == "bfloat16":
        return x.view(np.uint16)
    return x


def f32(name: str, x, fw: str):
    """A float32 array of the caller's framework (a copy only when the type differs)."""
    if x is None:
        return None
    f = framework(name, x)
    if f != fw:
        raise TypeError(
            f"polyattn: argument '{name}': is a {f} array but q is a {fw} array; "
            "pass arrays of one framework"
        )
    if f == "torch":
        x = x.detach()
        return x if x.dtype == _torch().float32 else x.float()
    return x if x.dtype == np.float32 else x.astype(np.float32)


def as_tensor_like(x, fw: str):
    """A numpy value (computed gate) moved to the caller's framework."""
    if fw == "torch" and not is_torch(x):
        return _torch().from_numpy(np.ascontiguousarray(x))
    return x


def int64(name: str, x, fw: str):
    """cu_seqlens / state_indices: a contiguous int64 vector (lists and int32 are converted)."""
    if x is None:
        return None
    if is_torch(x):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        t = _torch()
        if x.dtype != t.int64 or (x.numel() > 1 and x.stride(0) != 1):
            x = x.to(t.int64).contiguous()
        if x.ndim != 1:
            raise ValueError(f"polyattn: argument '{name}': expected a vector, got {list(x.shape)}")
        return x
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"polyattn: argument '{name}': must hold integers, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.ndim != 1:
        raise ValueError(f"polyattn: argument '{name}': expected a vector, got {list(a.shape)}")
    return a


def empty(fw: str, shape, dtype: str):
    """An uninitialised array of the caller's framework."""
    shape = tuple(int(s) for s in shape)
    if fw == "torch":
        t = _torch()
        return t.empty(shape, dtype=getattr(t, dtype))
    if dtype == "bfloat16":
        import ml_dtypes

        return np.empty(shape, dtype=ml_dtypes.bfloat16)
    return np.empty(shape, dtype=np.dtype(dtype))


def zeros(fw: str, shape, dtype: str = "float32"):
    a = empty(fw, shape, dtype)
    a[...] = 0
    return a


def swap_last(x):
    """A view with the last two axes exchanged (V-first state layout), no copy."""
    if x is None:
        return None
    return x.transpose(-1, -2) if is_torch(x) else np.swapaxes(x, -1, -2)


def nseq(B: int, cu, name: str | None = None, x=None) -> int:
    """Sequences: B, or len(cu_seqlens) − 1 when packed; with `name`, packed sequences need
    batch size 1 (ValueError naming cu_seqlens and showing the shape of x, the argument `name`)."""
    if cu is None:
        return B
    if name is not None and B != 1:
        raise ValueError(
            f"polyattn: argument 'cu_seqlens': needs batch size 1 (sequences packed along T), "
            f"got {name} of shape {list(x.shape)}"
        )
    return int(cu.shape[0]) - 1


# ---- element-wise math on either framework (gates computed outside the kernels) ----


def softplus(x):
    """PyTorch's softplus (beta 1, threshold 20): the identity above 20."""
    if is_torch(x):
        return _torch().nn.functional.softplus(x)
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def sigmoid(x):
    if is_torch(x):
        return _torch().sigmoid(x)
    return 1.0 / (1.0 + np.exp(-x))


def exp(x):
    return _torch().exp(x) if is_torch(x) else np.exp(x)
