"""Offline settings for every test, plus the shared fixtures from tests/fixtures/."""

import os
import tempfile

from rare import runtime

# Tests never report to a user's running `make ui` server, nor write into the project's .prefect/.
os.environ["RARE_DETECT_PREFECT_SERVER"] = "0"
os.environ["PREFECT_API_URL"] = ""  # set but empty (ephemeral mode): wins over the project's prefect.toml
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rare-test-prefect-")
runtime.configure()

pytest_plugins = [
    "tests.fixtures.tiny_root",
    "tests.fixtures.benchmark",
    "tests.fixtures.enhance",
    "tests.fixtures.models",
    "tests.fixtures.evaluate",
    "tests.fixtures.serve",
]
