"""The process-wide workspace from Python: workspace_stats, release_workspace and
set_workspace_limit (docs/conventions.md §5.8) around a softmax prefill, which packs K and V into
workspace memory on every call."""

import numpy as np
import pytest

import polyattn as pa

DEFAULT_LIMIT = 256 << 20  # the C++ kDefaultWorkspaceLimit
FIELDS = {"retained_bytes", "retained_blocks", "in_use_blocks", "reuses", "allocations",
          "limit_bytes"}


@pytest.fixture(autouse=True)
def fresh_workspace():
    """Each test starts with nothing retained and leaves the default limit behind."""
    pa.release_workspace()
    yield
    pa.set_workspace_limit(DEFAULT_LIMIT)
    pa.release_workspace()


def prefill(threads=2):
    r = np.random.default_rng(5)
    q, k, v = (r.standard_normal((1, 200, 4, 64)).astype(np.float32) for _ in range(3))
    return pa.flash_attn_func(q, k, v, causal=True, threads=threads)


def test_stats_release_and_reuse():
    s0 = pa.workspace_stats()
    assert set(s0) == FIELDS and all(isinstance(x, int) for x in s0.values())
    assert s0["retained_bytes"] == 0 and s0["retained_blocks"] == 0 and s0["in_use_blocks"] == 0
    assert s0["limit_bytes"] == DEFAULT_LIMIT
    first = prefill()
    s1 = pa.workspace_stats()
    assert s1["retained_bytes"] > 0 and s1["retained_blocks"] >= 2  # packed K and V
    assert s1["in_use_blocks"] == 0 and s1["allocations"] > s0["allocations"]
    assert np.array_equal(prefill(), first)  # the same bits from reused memory
    s2 = pa.workspace_stats()
    assert s2["allocations"] == s1["allocations"] and s2["reuses"] >= s1["reuses"] + 2
    assert pa.release_workspace() == s2["retained_bytes"]
    s3 = pa.workspace_stats()
    assert s3["retained_bytes"] == 0 and s3["retained_blocks"] == 0
    assert pa.release_workspace() == 0


def test_limit_zero_retains_nothing():
    prefill()
    assert pa.workspace_stats()["retained_bytes"] > 0
    pa.set_workspace_limit(0)  # frees what is retained now
    assert pa.workspace_stats()["retained_bytes"] == 0
    assert pa.workspace_stats()["limit_bytes"] == 0
    allocations = pa.workspace_stats()["allocations"]
    prefill()
    s = pa.workspace_stats()
    assert s["retained_bytes"] == 0 and s["retained_blocks"] == 0
    assert s["allocations"] >= allocations + 2  # every call takes fresh memory
    pa.set_workspace_limit(DEFAULT_LIMIT)
    prefill()
    assert pa.workspace_stats()["retained_blocks"] >= 2


def test_bad_limit_raises():
    with pytest.raises(ValueError, match="'nbytes'"):
        pa.set_workspace_limit(-1)
    with pytest.raises(TypeError, match="'nbytes'"):
        pa.set_workspace_limit(1.5)
    assert pa.workspace_stats()["limit_bytes"] == DEFAULT_LIMIT  # unchanged
    prefill()  # still retained
    assert pa.workspace_stats()["retained_blocks"] >= 2
