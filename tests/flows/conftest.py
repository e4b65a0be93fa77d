import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server (SQLite in a temp dir) for the flow tests, stopped cleanly."""
    # generous: on a loaded 2-core CI machine the server can take over 30 s to answer
    with prefect_test_harness(server_startup_timeout=120):
        yield
