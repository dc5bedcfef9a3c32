import os

import pytest
import torch

# Tests never touch the network: huggingface_hub / transformers / diffusers read this at import.
os.environ["HF_HUB_OFFLINE"] = "1"
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
