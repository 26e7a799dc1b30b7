import pytest
import torch

from edit_mobile.main import THIRD_PARTY_NOTICES


def pytest_configure(config):
    """Third-party deprecation notices we cannot act on; our own warnings still show."""
    for message in THIRD_PARTY_NOTICES:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
