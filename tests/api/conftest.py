from tests.candles.api.fixtures import *  # noqa: F403 (fixtures)
