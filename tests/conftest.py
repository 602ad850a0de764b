from __future__ import annotations

import pytest
from tiny_specs import tiny_spec_dict


@pytest.fixture
def tiny() -> dict:
    """A spec dict that trains in well under a second."""
    return tiny_spec_dict()
