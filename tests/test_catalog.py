"""The committed `test.flow.yaml` bindings and `acmeCo/` are what discover writes today."""

from pathlib import Path

from tests.regenerate_catalog import REPO, regenerate


def test_committed_catalog_is_discovers_output(tmp_path: Path) -> None:
    fresh = regenerate(tmp_path / "test.flow.yaml", port=0)
    for path in fresh:
        committed = REPO / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed.name} is stale: run `make catalog`"
    assert sorted(p.name for p in (REPO / "acmeCo").iterdir()) == sorted(p.name for p in fresh[1:])
