"""Integration tests: the ``integration`` marker on every test here, and the one catalog fixture
every catalog-generic test runs on (embedded SQLite and SeaweedFS's REST catalog on S3). The
real servers (``seaweed``, ``tansu``) are fixtures of ``tests/conftest.py``, shared with the
interop matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import CatalogUnderTest, rest_catalog_settings, s3_secret

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=["sql", "rest"])
def any_catalog(request: pytest.FixtureRequest) -> CatalogUnderTest:
    """The same test on the embedded catalog and on the REST catalog."""
    if request.param == "sql":
        return CatalogUnderTest("sql", {})
    seaweed = request.getfixturevalue("seaweed")
    return CatalogUnderTest("rest", rest_catalog_settings(seaweed), s3_secret(seaweed), seaweed)
