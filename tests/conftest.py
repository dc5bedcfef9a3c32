import os
import sys
from pathlib import Path

# The shared helpers (pipeline_helpers, hardening_helpers, synthetic_runs, ...) live in tests/ while
# the test modules live in its subfolders: pytest's "prepend" import mode puts only each test
# module's own folder on sys.path, so put tests/ there first, before any test module is imported.
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests never touch the network: huggingface_hub / transformers / diffusers read this at import.
os.environ["HF_HUB_OFFLINE"] = "1"
# The Rays this process starts (fixtures, in-process runs) skip token auth, so Ray writes no
# ~/.ray/auth_token; the CLI children of pipeline_helpers.cli_run_process and the job tests drop
# it, so their local Ray gets the product's own token (pipeline.cluster), as a user's run does.
os.environ["RAY_AUTH_MODE"] = "disabled"
torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(scope="module")
def cluster():
    """One shared Ray cluster per test module (hardening suites; see hardening_helpers)."""
    from hardening_helpers import SharedCluster

    shared = SharedCluster(num_cpus=2)
    yield shared
    shared.shutdown()


@pytest.fixture(scope="module")
def drivers():
    """Forked CLI drivers with the code already imported (hardening suites)."""
    from hardening_helpers import ForkedDrivers

    return ForkedDrivers()
