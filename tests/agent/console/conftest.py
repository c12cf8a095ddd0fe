from tests.agent.broker_fixtures import broker, broker_factory  # noqa: F401 - fixtures
from tests.agent.daemon.conftest import daemon_model  # noqa: F401 - fixture
