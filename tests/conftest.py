import os

import pytest
from hypothesis import HealthCheck, settings

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
