"""Offline settings for every test, plus the shared fixtures from tests/fixtures/."""

import os

from rare import runtime

runtime.configure(os.environ.get("RARE_TEST_PROJECT_DIR"))

pytest_plugins = [
    "tests.fixtures.tiny_root",
    "tests.fixtures.benchmark",
    "tests.fixtures.enhance",
    "tests.fixtures.models",
    "tests.fixtures.evaluate",
]
