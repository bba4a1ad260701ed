import os

import pytest
from hypothesis import HealthCheck, settings

# measurements in the suite share the machine with the other tests: time them at once rather
# than wait for full machine speed (tests/test_machine_speed.py sets latency.settle_s itself)
os.environ.setdefault("NASIR_LATENCY_SETTLE_S", "0")

settings.register_profile(
    "nasir", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "nasir"))


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch

        # one thread a worker when pytest-xdist runs the suite in parallel (make test)
        torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    except ImportError:  # pragma: no cover
        pass
    yield
