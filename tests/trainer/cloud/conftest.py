import pytest

pytestmark = pytest.mark.trainer
