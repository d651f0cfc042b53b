import sys
from pathlib import Path

import pytest

# tests/ is not a package: make tests/otel_helpers.py importable under any import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from otel_helpers import ENCODINGS  # noqa: E402


@pytest.fixture(params=ENCODINGS)
def encoding(request) -> str:
    """Every test that takes ``encoding`` runs once per OTLP encoding."""
    return request.param
