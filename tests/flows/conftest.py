import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server (SQLite in a temp dir) for the flow tests, stopped cleanly."""
    with prefect_test_harness():
        yield
