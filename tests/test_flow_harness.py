"""Tests of tests/flow_harness/, the flowctl stand-in, against the toy connectors.

Two connectors are used (tests/toy_connector/):

* the CDK toy, for what must hold with a real estuary-cdk process: spec, discover
  and its catalog files, validate, and a preview that resumes from merged state;
* the scripted fake, for exact control of timing, exit codes, stderr volume and
  protocol errors. It starts in milliseconds, which keeps this module fast.

A CDK process spends ~1.5 s of CPU importing aiohttp and pydantic, so the CDK toy
is run once per module (`toy`), with the independent requests run concurrently.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import flow_harness as fh
from tests.flow_harness import Session
from tests.flow_harness.process import _command

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------
# The CDK toy

TOY_FLOW = """\
captures:
  acmeCo/source-toy:
    endpoint:
      local:
        command: ["python", "-m", "tests.toy_connector"]
        config:
          backfill_count: 10
          poll_seconds: 0.2
          polls: 3
        env:
          PYTHONPATH: {root}
    bindings: []
"""

EXPECTED_TOY_FLOW = """\
---
import:
  - acmeCo/flow.yaml
captures:
  acmeCo/source-toy:
    endpoint:
      local:
        command:
          - python
          - "-m"
          - tests.toy_connector
        config:
          backfill_count: 10
          poll_seconds: 0.2
          polls: 3
        env:
          PYTHONPATH: {root}
    bindings:
      - resource:
          name: items
          interval: PT1S
        target: acmeCo/items
      - resource:
          name: codes
          interval: PT1S
        target: acmeCo/codes
"""

EXPECTED_TOY_COLLECTIONS = """\
---
collections:
  acmeCo/codes:
    schema: codes.schema.yaml
    key:
      - /_meta/row_id
  acmeCo/items:
    schema: items.schema.yaml
    key:
      - /id
"""

BACKFILL_COUNT = 10
POLLS = 3
NEW_ID_BASE = 1000
CODES: list[dict[str, Any]] = [
    {"_meta": {"op": "c", "row_id": i}, "code": c} for i, c in enumerate(["alpha", "beta", "gamma"])
]


@dataclass
class ToyRuns:
    """Everything the CDK tests read; a request that failed holds its exception."""

    path: Path
    discovered: list[dict[str, Any]]
    spec: dict[str, Any] | BaseException
    validated: dict[str, Any] | BaseException
    preview: fh.PreviewResult | BaseException
    commits: list[fh.Commit]


def outcome(future: concurrent.futures.Future[Any]) -> Any:
    return future.exception() or future.result()


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyRuns:
    """A fresh toy catalog, discovered with write=True, then validated and previewed.

    Discover runs with a config patch and over a planted stale schema file, so tests
    can check that the patch is not saved and the file is deleted. The preview has
    two sessions, with explicit acknowledgements:

    - session 0 runs until the backfill is complete (`backfills_complete`);
    - session 1 resumes from the merged state; the toy stops itself after its 3rd
      poll (`stop_after_polls`), so the session ends with the process, exit code 0.
    """
    root = tmp_path_factory.mktemp("toy")
    path = root / "test.flow.yaml"
    path.write_text(TOY_FLOW.format(root=ROOT))
    (root / "acmeCo").mkdir()
    (root / "acmeCo" / "stale.schema.yaml").write_text("type: object\n")
    commits: list[fh.Commit] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        spec: concurrent.futures.Future[Any] = pool.submit(fh.spec, path)  # Needs no catalog.
        discovered = fh.discover(path, write=True, config_patch={"page_size": 3})
        validated: concurrent.futures.Future[Any] = pool.submit(fh.validate, path)
        preview: concurrent.futures.Future[Any] = pool.submit(
            fh.preview,
            path,
            sessions=[Session(transactions=-1, until=fh.backfills_complete), Session(transactions=-1)],
            delay=0.3,
            config_patch={"explicit_acks": True, "stop_after_polls": True},
            resource_path_pointers=["/name"],
            on_commit=commits.append,
        )
        concurrent.futures.wait([spec, validated, preview])
    return ToyRuns(path, discovered, outcome(spec), outcome(validated), outcome(preview), commits)


def ok[T](value: T | BaseException) -> T:
    if isinstance(value, BaseException):
        raise value
    return value


def test_spec_in_flowctl_field_order(toy: ToyRuns) -> None:
    spec = ok(toy.spec)
    assert list(spec) == [
        "protocol",
        "configSchema",
        "resourceConfigSchema",
        "documentationUrl",
        "resourcePathPointers",
    ]
    assert spec["protocol"] == 3032023
    assert spec["resourcePathPointers"] == ["/name"]
    assert spec["documentationUrl"] == "https://example.com/toy-connector"
    assert "backfill_count" in spec["configSchema"]["properties"]


def test_discover_emits_raw_bindings(toy: ToyRuns) -> None:
    bindings = toy.discovered
    assert [list(b) for b in bindings] == [["recommendedName", "resourceConfig", "documentSchema", "key"]] * 2
    assert [(b["recommendedName"], b["resourceConfig"], b["key"]) for b in bindings] == [
        ("items", {"name": "items", "interval": "PT1S"}, ["/id"]),
        ("codes", {"name": "codes", "interval": "PT1S"}, ["/_meta/row_id"]),
    ]
    assert bindings[0]["documentSchema"]["required"] == ["id", "name", "version"]
    assert bindings[0]["documentSchema"]["x-infer-schema"] is True


def test_discover_write_rewrites_the_catalog(toy: ToyRuns) -> None:
    catalog = toy.path.parent / "acmeCo"
    # The endpoint config is kept as written: the config patch given to discover is not saved.
    assert toy.path.read_text() == EXPECTED_TOY_FLOW.format(root=ROOT)
    assert (catalog / "flow.yaml").read_text() == EXPECTED_TOY_COLLECTIONS
    assert sorted(p.name for p in catalog.iterdir()) == [
        "codes.schema.yaml",
        "flow.yaml",
        "items.schema.yaml",
    ]
    for binding in toy.discovered:
        text = (catalog / f"{binding['recommendedName']}.schema.yaml").read_text()
        assert text.startswith("---\n$defs:\n")
        assert yaml.safe_load(text) == binding["documentSchema"]

    source = fh.load_source(toy.path)
    assert [(b.target, dict(b.resource)) for b in source.bindings] == [
        ("acmeCo/items", {"name": "items", "interval": "PT1S"}),
        ("acmeCo/codes", {"name": "codes", "interval": "PT1S"}),
    ]
    assert source.collection("acmeCo/items").key == ("/id",)
    assert source.collection("acmeCo/items").write_schema == toy.discovered[0]["documentSchema"]


def test_validate_sends_the_catalog_bindings(toy: ToyRuns) -> None:
    assert ok(toy.validated) == {"bindings": [{"resourcePath": ["items"]}, {"resourcePath": ["codes"]}]}


def item(id: int, version: int) -> dict[str, Any]:
    return {"id": id, "name": f"item-{id}" if version == 0 else f"item-{id}-v{version}", "version": version}


def poll_documents(poll: int) -> list[dict[str, Any]]:
    """What the toy emits for incremental poll `poll` (see tests/toy_connector/connector.py)."""
    version = poll + 1
    docs = [
        item(poll % BACKFILL_COUNT, version),
        {"id": NEW_ID_BASE + poll, "name": f"new-{poll}", "version": version},
    ]
    if poll == 1:
        docs.append({"_meta": {"op": "d"}, **item(BACKFILL_COUNT - 1, 0), "version": version})
    return docs


def session_documents(session: fh.SessionResult, collection: str) -> list[Any]:
    return [doc for commit in session.commits for name, doc in commit.documents if name == collection]


def test_preview_first_session_runs_the_backfill(toy: ToyRuns) -> None:
    result = ok(toy.preview)
    first = result.sessions[0]
    assert first.initial_state == {}
    assert (first.stop_reason, first.exit_code) == ("until", -9)  # Killed by the harness, as flowctl does.
    assert first.explicit_acknowledgements
    # Polls wait for the backfill, and `until` stops at its last checkpoint.
    assert session_documents(first, "acmeCo/items") == [item(i, 0) for i in range(BACKFILL_COUNT)]
    assert first.state["bindingStateV1"]["items"]["inc"] == {"cursor": 0}
    assert first.state["bindingStateV1"]["items"].get("backfill") is None
    # The documents of a commit are those of its checkpoints; the first checkpoints
    # are the CDK's document-free initialisation.
    for commit in first.commits:
        assert commit.documents == [doc for cp in commit.checkpoints for doc in cp.documents]
    assert result.checkpoints[0].document_count == 0
    assert result.sourced_schemas[0][0] == "acmeCo/items"
    assert result.sourced_schemas[0][1]["properties"]["id"]["type"] == "integer"
    assert any(log.get("msg") == "beginning backfill" for log in first.logs)


def test_preview_resumes_from_merged_state(toy: ToyRuns) -> None:
    result = ok(toy.preview)
    first, second = result.sessions
    assert second.initial_state == first.state
    # No second backfill: only the polls, which continue where the first session left off.
    assert session_documents(second, "acmeCo/items") == [d for p in range(POLLS) for d in poll_documents(p)]
    assert not any("backfill" in str(log.get("msg")) for log in second.logs)
    # The toy stopped itself: the session ended with the process.
    assert (second.stop_reason, second.exit_code) == ("exited", 0)
    assert second.state["bindingStateV1"]["items"]["inc"] == {"cursor": POLLS}
    # The final state is every committed patch applied in order.
    merged: Any = {}
    for cp in result.checkpoints:
        merged = fh.merge_patch(merged, cp.updated)
    assert result.state == merged == second.state
    # The snapshot ran in one session or the other (the two race with the backfill).
    assert result.documents_of("acmeCo/codes")[:3] == CODES


def test_preview_acknowledgements_keep_the_cdk_happy(toy: ToyRuns) -> None:
    result = ok(toy.preview)
    # A wrong acknowledgement count makes the CDK fail (exit 1); both sessions had
    # several commits, so acknowledgements were sent, and session 1 exited 0.
    assert [s.explicit_acknowledgements for s in result.sessions] == [True, True]
    assert len(result.commits) >= 3
    assert toy.commits == result.commits


def test_preview_documents_reduce_to_the_model(toy: ToyRuns) -> None:
    result = ok(toy.preview)
    expected: dict[tuple[Any, ...], dict[str, Any]] = {(i,): item(i, 0) for i in range(BACKFILL_COUNT)}
    for poll in range(POLLS):
        for doc in poll_documents(poll):
            if doc.get("_meta", {}).get("op") == "d":
                del expected[(doc["id"],)]
            else:
                expected[(doc["id"],)] = doc
    assert result.reduced("acmeCo/items") == expected
    assert result.counts["acmeCo/items"] == BACKFILL_COUNT + 2 * POLLS + 1


def test_flowctl_rendering_of_a_preview(toy: ToyRuns) -> None:
    result = ok(toy.preview)
    rendered = fh.flowctl_documents(result)
    for commit in result.commits:
        items = [
            doc["id"]
            for name, doc in fh.flowctl_documents(result, commits=[commit])
            if name == "acmeCo/items"
        ]
        assert items == sorted(set(items))  # Combined by key, in key order, per transaction.
    assert all(
        doc["_meta"]["uuid"] == fh.UUID_PLACEHOLDER and list(doc) == sorted(doc) for _, doc in rendered
    )
    uuid = {"uuid": fh.UUID_PLACEHOLDER}
    assert fh.capture_snapshot(result, redact_fields={"version"}) == [
        ["acmeCo/codes", {"_meta": {**CODES[0]["_meta"], **uuid}, "code": "alpha"}],
        ["acmeCo/items", {"_meta": uuid, "id": 0, "name": "item-0", "version": "redacted"}],
    ]


# --------------------------------------------------------------------------------------
# The scripted fake

SCRIPTED_FLOW = """\
collections:
  acmeCo/items:
    key: [/id]
    schema: {{type: object}}
  acmeCo/codes:
    key: [/code]
    schema: {{type: object}}
captures:
  acmeCo/scripted:
    endpoint:
      local:
        command: [python, -m, tests.toy_connector.scripted]
        config: {{script: []}}
        env:
          PYTHONPATH: {root}
    bindings:
      - resource: {{name: items}}
        target: acmeCo/items
      - resource: {{name: codes}}
        target: acmeCo/codes
      - resource: {{name: archive}}
        target: acmeCo/archive
        disable: true
"""

OPENED = {"out": {"opened": {"explicitAcknowledgements": False}}}
OPENED_WITH_ACKS = {"out": {"opened": {"explicitAcknowledgements": True}}}


def captured(doc: dict[str, Any], binding: int = 0) -> dict[str, Any]:
    return {"out": {"captured": {"binding": binding, "doc": doc}}}


def checkpoint(updated: dict[str, Any], merge_patch: bool = True) -> dict[str, Any]:
    return {"out": {"checkpoint": {"state": {"updated": updated, "mergePatch": merge_patch}}}}


def stderr_log(msg: str, level: str = "INFO") -> dict[str, Any]:
    return {"stderr": json.dumps({"level": level, "msg": msg, "fields": {}})}


@pytest.fixture
def scripted(tmp_path: Path) -> Path:
    path = tmp_path / "test.flow.yaml"
    path.write_text(SCRIPTED_FLOW.format(root=ROOT))
    return path


def run_script(path: Path, script: list[dict[str, Any]], **kwargs: Any) -> fh.PreviewResult:
    """Preview the scripted fake running `script`. Pointers are given, which saves a
    Spec process per test; pass `resource_path_pointers=None` to have Spec run."""
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("resource_path_pointers", ["/name"])
    return fh.preview(path, config={"script": script}, **kwargs)


def stdin_requests(session: fh.SessionResult) -> list[Any]:
    return [log["fields"]["request"] for log in session.logs if log.get("msg") == "stdin"]


def test_stop_after_n_checkpoints_with_documents(scripted: Path) -> None:
    # One write, so the session must stop in the middle of what one read returns.
    lines = [
        OPENED,
        checkpoint({"init": True}),  # Document-free: does not count.
        captured({"id": 1}),
        checkpoint({"cursor": 1}),
        captured({"id": 2}),
        captured({"code": "x"}, binding=1),
        checkpoint({"cursor": 2}),
        captured({"id": 3}),
        checkpoint({"cursor": 3}),
    ]
    script: list[dict[str, Any]] = [{"batch": [line["out"] for line in lines]}]
    result = run_script(
        scripted,
        script,
        sessions=[Session(transactions=-1, checkpoints=2)],
        delay=30,
        resource_path_pointers=None,  # Spec runs while the session's process starts.
    )
    (session,) = result.sessions
    assert session.stop_reason == "checkpoints"
    assert result.documents == [
        ("acmeCo/items", {"id": 1}),
        ("acmeCo/items", {"id": 2}),
        ("acmeCo/codes", {"code": "x"}),
    ]
    assert [cp.counts for cp in result.checkpoints] == [
        {},
        {"acmeCo/items": 1},
        {"acmeCo/items": 1, "acmeCo/codes": 1},
    ]
    assert [cp.documents for cp in result.checkpoints] == [
        [],
        [("acmeCo/items", {"id": 1})],
        [("acmeCo/items", {"id": 2}), ("acmeCo/codes", {"code": "x"})],
    ]
    assert session.uncommitted_documents == 0  # Lines after the stopping checkpoint are not processed.
    assert result.transactions == [result.documents]
    assert result.state == {"init": True, "cursor": 2}
    assert session.elapsed < 10  # It did not wait for the 30 s delay.


def test_delay_groups_checkpoints_into_transactions(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        captured({"id": 1}),
        checkpoint({"c": 1}),
        {"sleep": 0.8},
        {"batch": [captured({"id": 2})["out"], checkpoint({"c": 2})["out"], checkpoint({"c": 3})["out"]]},
        {"sleep": 1.0},
        captured({"id": 4}),
        checkpoint({"c": 4}),
        {"sleep": 5},
        checkpoint({"c": 5}),
    ]
    result = run_script(scripted, script, sessions=[3], delay=0.5)
    (session,) = result.sessions
    assert session.stop_reason == "transactions"
    # Transaction 1 commits at 0.5 s; 2 at 1.0 s (checkpoints read at 0.8 s);
    # 3 has nothing by 1.5 s and commits when the checkpoint of 1.8 s arrives.
    assert [[cp.updated for cp in commit.checkpoints] for commit in session.commits] == [
        [{"c": 1}],
        [{"c": 2}, {"c": 3}],
        [{"c": 4}],
    ]
    assert result.transactions == [
        [("acmeCo/items", {"id": 1})],
        [("acmeCo/items", {"id": 2})],
        [("acmeCo/items", {"id": 4})],
    ]
    first, second, third = (commit.elapsed for commit in session.commits)
    assert 0.5 <= first < 0.8 and 1.0 <= second < 1.3 and third >= 1.7


def test_merge_patch_state_across_sessions(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        {"log_state": True},
        checkpoint({"a": {"x": 1, "y": 2}, "list": [1, 2]}),
        checkpoint({"a": {"y": None, "z": {"deep": None, "kept": 1}}, "b": True, "keep": None}),
    ]
    result = run_script(scripted, script, sessions=[1, 1], delay=0.2, initial_state={"keep": 1, "b": False})
    merged = {"b": True, "a": {"x": 1, "z": {"kept": 1}}, "list": [1, 2]}
    first, second = result.sessions
    assert first.state == merged
    opened_with = [log["fields"]["state"] for log in second.logs if log.get("msg") == "open state"]
    assert opened_with == [merged]
    assert result.state == merged  # The same patches again change nothing.
    # The harness copies patch values: later patches never alter a recorded one.
    assert result.checkpoints[0].updated == {"a": {"x": 1, "y": 2}, "list": [1, 2]}
    assert first.commits[0].state_update == {
        "updated": {
            "a": {"x": 1, "y": None, "z": {"deep": None, "kept": 1}},
            "list": [1, 2],
            "b": True,
            "keep": None,
        },
        "mergePatch": True,
    }


def test_checkpoint_without_merge_patch_replaces_the_state(scripted: Path) -> None:
    script: list[dict[str, Any]] = [OPENED, checkpoint({"a": 1}), checkpoint({"b": 2}, merge_patch=False)]
    result = run_script(scripted, script, sessions=[1], delay=0.2, initial_state={"old": True})
    assert result.state == {"b": 2}
    assert result.commits[0].state_update == {"updated": {"b": 2}, "mergePatch": False}


def test_acknowledgements_match_each_commit(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED_WITH_ACKS,
        {"batch": [checkpoint({"c": 1})["out"], checkpoint({"c": 2})["out"]]},
        {"sleep": 0.8},
        checkpoint({"c": 3}),
        {"sleep": 0.8},
        checkpoint({"c": 4}),
    ]
    result = run_script(scripted, script, sessions=[3], delay=0.3)
    (session,) = result.sessions
    assert [len(c.checkpoints) for c in session.commits] == [2, 1, 1]
    # Each commit but the last (the session ends there) is acknowledged with its checkpoint count.
    assert stdin_requests(session) == [
        {"acknowledge": {"checkpoints": 2}},
        {"acknowledge": {"checkpoints": 1}},
    ]


def test_duration_ends_a_quiet_session(scripted: Path) -> None:
    # Quiet after its first checkpoint: without `duration` this would time out at ~0.9 s.
    script: list[dict[str, Any]] = [OPENED, captured({"id": 1}), checkpoint({"c": 1})]
    result = run_script(
        scripted, script, sessions=[Session(transactions=5, duration=1.5)], delay=0.1, timeout=0.8
    )
    (session,) = result.sessions
    assert session.stop_reason == "duration"
    assert result.documents == [("acmeCo/items", {"id": 1})]


def test_until_stops_after_the_matching_checkpoint(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        checkpoint({"done": False}),
        checkpoint({"x": 1}),
        checkpoint({"done": True}),
        checkpoint({"after": 1}),
    ]
    seen: list[int] = []

    def on_checkpoint(progress: fh.Progress) -> None:
        seen.append(progress.checkpoints)

    def until(progress: fh.Progress) -> bool:
        return bool(progress.state.get("done"))

    result = run_script(
        scripted,
        script,
        sessions=[Session(transactions=-1, until=until)],
        delay=30,
        on_checkpoint=on_checkpoint,
    )
    assert result.sessions[0].stop_reason == "until"
    assert result.state == {"done": True, "x": 1}
    assert seen == [1, 2, 3]


def test_stop_on_log_stops_while_the_connector_waits(scripted: Path) -> None:
    # A checkpoint, then a log line saying it is about to wait, then a long wait: the session
    # stops during the wait, with the first checkpoint committed.
    script: list[dict[str, Any]] = [
        OPENED,
        captured({"id": 1}),
        checkpoint({"c": 1}),
        stderr_log("job will be re-submitted"),
        {"sleep": 5},
        checkpoint({"c": 2}),
    ]
    lines: list[str] = []

    def waiting(line: fh.LogLine) -> bool:
        return "re-submitted" in str((line.record or {}).get("msg"))

    result = run_script(scripted, script, sessions=[Session(transactions=-1, stop_on_log=waiting)], delay=30,
                        on_log=lambda line: lines.append(line.raw))
    (session,) = result.sessions
    assert session.stop_reason == "logged"
    # Stopped during the wait: the checkpoint after it was never read.
    assert result.state == {"c": 1} and result.documents == [("acmeCo/items", {"id": 1})]
    assert any("re-submitted" in line for line in lines)  # on_log still sees every line


def test_backfills_complete_reads_cdk_state() -> None:
    def progress(state: dict[str, Any]) -> fh.Progress:
        cp = fh.Checkpoint(0, 0.0, [], {}, [], {}, True)
        return fh.Progress(0, 0.0, cp, state, ("items", "codes"), 1, 0)

    backfilling = {"bindingStateV1": {"items": {"backfill": {"cutoff": 0}}, "codes": {}}}
    done = {"bindingStateV1": {"items": {"inc": {"cursor": 3}}, "codes": {"snapshot": {}}}}
    assert not fh.backfills_complete(progress({}))
    assert not fh.backfills_complete(progress({"bindingStateV1": {"items": {}}}))
    assert not fh.backfills_complete(progress(backfilling))
    assert fh.backfills_complete(progress(done))
    assert not fh.backfills_complete(progress({**done, "backfillRequests": {"items": True}}))


def test_chatty_stderr_is_drained_concurrently(scripted: Path) -> None:
    # 4 MiB of stderr before `opened`: far beyond a pipe buffer, so an undrained
    # stderr would block the connector and the session would time out.
    script: list[dict[str, Any]] = [
        {"stderr": "x" * 1023, "repeat": 4096},
        OPENED,
        captured({"id": 1}),
        checkpoint({}),
    ]
    logged: list[fh.LogLine] = []
    result = run_script(scripted, script, sessions=[1], delay=0.1, timeout=5.0, on_log=logged.append)
    assert result.documents == [("acmeCo/items", {"id": 1})]
    assert len(result.stderr) == 4096
    assert len(logged) == 4096 and logged[0].record is None


def test_timeout_reports_the_stderr_tail(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        checkpoint({"c": 1}),
        stderr_log("waiting on the API"),
        {"sleep": 60},
    ]
    started = time.monotonic()
    with pytest.raises(fh.ConnectorTimeout) as caught:
        run_script(scripted, script, sessions=[2], delay=0.1, timeout=1.5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "no checkpoint for 1.5s" in message
    assert "INFO waiting on the API" in message
    # The failed session is in the result, with what it committed before the timeout.
    assert caught.value.result is not None
    (failed,) = caught.value.result.sessions
    assert (failed.stop_reason, failed.exit_code) == ("error", -9)
    assert [[cp.updated for cp in commit.checkpoints] for commit in failed.commits] == [[{"c": 1}]]
    assert caught.value.result.state == {"c": 1}


def test_timeout_waiting_for_opened(scripted: Path) -> None:
    script: list[dict[str, Any]] = [stderr_log("stuck before opened"), {"sleep": 60}]
    with pytest.raises(fh.ConnectorTimeout, match="(?s)no 'opened' response.*stuck before opened"):
        run_script(scripted, script, sessions=[1], timeout=1.5)


def test_nonzero_exit_raises_with_the_error_log(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        captured({"id": 1}),
        checkpoint({"c": 1}),
        {
            "stderr": json.dumps(
                {
                    "level": "ERROR",
                    "msg": "boom",
                    "fields": {"traceback": ["Traceback", "RuntimeError: boom"]},
                }
            )
        },
        {"exit": 3},
    ]
    with pytest.raises(
        fh.ConnectorError, match="(?s)exited with code 3.*ERROR boom.*RuntimeError: boom"
    ) as caught:
        run_script(scripted, script, sessions=[1], delay=30)
    assert caught.value.exit_code == 3
    assert caught.value.result is not None
    assert caught.value.result.documents == [("acmeCo/items", {"id": 1})]  # Committed before the exit.

    result = run_script(scripted, script, sessions=[1], delay=30, check=False)
    assert (result.sessions[0].stop_reason, result.exit_code) == ("exited", 3)
    assert result.logs[-1]["msg"] == "boom"


def test_exit_before_opened(scripted: Path) -> None:
    with pytest.raises(fh.ConnectorError, match="(?s)exited before 'opened' \\(code 1\\).*bad config"):
        run_script(scripted, [{"stderr": "bad config"}, {"exit": 1}], sessions=[1])


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ([OPENED, {"raw": "not json"}], "malformed message"),
        ([captured({"id": 1}), OPENED], "expected 'opened' first"),
        ([OPENED, captured({"id": 1}, binding=7), checkpoint({})], "malformed message"),
        ([OPENED, {"out": {"unknown": {}}}], "unexpected message 'unknown'"),
        ([OPENED, captured({"id": 1}), {"exit": 0}], "1 documents not followed by a checkpoint"),
    ],
)
def test_protocol_errors(scripted: Path, script: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(fh.ProtocolError, match=error):
        run_script(scripted, script, sessions=[1], delay=30)


def test_count_only_streams_a_large_capture(scripted: Path) -> None:
    count = 30_000
    script: list[dict[str, Any]] = [OPENED, {"documents": count}, checkpoint({"c": 1}), {"documents": 10}]
    started = time.monotonic()
    result = run_script(scripted, script, sessions=[Session(transactions=-1, checkpoints=1)], count_only=True)
    elapsed = time.monotonic() - started
    assert result.counts == {"acmeCo/items": count}
    assert result.documents == []
    assert elapsed < 10, f"{count} documents took {elapsed:.1f}s"

    seen = 0

    def on_document(collection: str, doc: Any) -> None:
        nonlocal seen
        seen += 1

    result = run_script(
        scripted,
        script,
        sessions=[Session(transactions=-1, checkpoints=1)],
        count_only=True,
        on_document=on_document,
    )
    assert seen == count and result.documents == []


def test_scripted_discover_write_marks_disabled_bindings(scripted: Path) -> None:
    bindings = fh.discover(scripted, write=True)
    assert bindings[1] == {
        "recommendedName": "archive",
        "resourceConfig": {"name": "archive"},
        "documentSchema": {"type": "object"},
        "key": ["/_meta/row_id"],
        "disable": True,
    }
    written = yaml.safe_load(scripted.read_text())
    assert written["import"] == ["acmeCo/flow.yaml"]
    assert written["captures"]["acmeCo/scripted"]["bindings"] == [
        {"resource": {"name": "items"}, "target": "acmeCo/items"},
        {"resource": {"name": "archive"}, "disable": True, "target": "acmeCo/archive"},
    ]
    # Disabled bindings are left out of Validate and Open.
    assert fh.validate(scripted) == {"bindings": [{"resourcePath": ["items"]}]}
    assert fh.apply(scripted) == {"actionDescription": ""}


# --------------------------------------------------------------------------------------
# Catalog loading


def test_load_source_resolves_command_config_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text(
        "api: {url: http://x, token: t}\nstart_date: 2024-01-01T00:00:00Z\n"
    )
    (tmp_path / "test.flow.yaml").write_text(
        "captures:\n"
        "  acmeCo/c:\n"
        "    interval: 3m\n"
        "    shards: {logLevel: debug}\n"
        "    endpoint: {local: {command: [python, -m, pkg], config: config.yaml, env: {A: '1'}}}\n"
        "    bindings:\n"
        "      - {resource: {name: x}, target: acmeCo/x, backfill: 2}\n"
    )
    source = fh.load_source(
        tmp_path / "test.flow.yaml", config_patch={"api": {"url": "http://127.0.0.1:9"}}, env={"B": "2"}
    )
    assert _command(source) == [sys.executable, "-m", "pkg"]
    # Timestamps stay strings, as in flowctl; the patch merges into the file's config.
    assert source.config == {
        "api": {"url": "http://127.0.0.1:9", "token": "t"},
        "start_date": "2024-01-01T00:00:00Z",
    }
    assert source.env == {"LOG_LEVEL": "debug", "A": "1", "B": "2"}
    assert source.interval_seconds == 180
    assert source.bindings == (fh.Binding(resource={"name": "x"}, target="acmeCo/x", backfill=2),)
    with pytest.raises(fh.HarnessError, match="collection 'acmeCo/x' is not defined"):
        fh.capture_spec(source, ["/name"])


def test_sops_config_needs_a_plaintext_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text("token_sops: ENC[abc]\nsops: {encrypted_suffix: _sops}\n")
    (tmp_path / "test.flow.yaml").write_text(
        "captures:\n  acmeCo/c:\n    endpoint: {local: {command: [python, -m, pkg], config: config.yaml}}\n"
    )
    monkeypatch.delenv("FLOW_HARNESS_CONFIG", raising=False)
    source = fh.load_source(tmp_path / "test.flow.yaml")
    with pytest.raises(fh.HarnessError, match="sops-encrypted"):
        source.require_config()

    (tmp_path / "plain.yaml").write_text("token_sops: secret\nnested: {key_sops: v}\n")
    monkeypatch.setenv("FLOW_HARNESS_CONFIG", str(tmp_path / "plain.yaml"))
    assert fh.load_source(tmp_path / "test.flow.yaml").config == {"token": "secret", "nested": {"key": "v"}}
    assert fh.load_source(tmp_path / "test.flow.yaml", config={"x": 1}).config == {"x": 1}


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("3m", 180.0), ("1h 30m", 5400.0), ("500ms", 0.5), ("2.5", 2.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert fh.parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(fh.HarnessError):
        fh.parse_duration("PT5M")


# --------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("path", "backfill", "expected"),
    [
        (["table"], 0, "table"),
        (["Account"], 1, "Account.v1"),
        (["public", "table"], 0, "public%2Ftable"),
        (["public", "table"], 1, "public%2Ftable.v1"),
        (["he!lo৬", "a/part%", "_¾the-=res+."], 3, "he%21lo৬%2Fa%2Fpart%25%2F_¾the-=res+..v3"),
        (
            ["prefix", "http://user:password@foo.bar.example.com:9000/hooks///baz?type=critical&test=true"],
            42,
            "prefix%2Fhttp%3A%2F%2Fuser%3Apassword%40foo.bar.example.com%3A9000%2Fhooks%2F%2F%2Fbaz%3Ftype=critical%26test=true.v42",
        ),
    ],
)
def test_state_key_matches_flow(path: list[str], backfill: int, expected: str) -> None:
    # Vectors from Flow's own tests of its state key encoding.
    assert fh.state_key(path, backfill) == expected


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7396, Appendix A.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7396(target: Any, patch: Any, expected: Any) -> None:
    before = json.dumps(target)
    assert fh.merge_patch(target, patch) == expected
    assert json.dumps(target) == before  # Inputs are not modified.


def test_reduce_by_key_applies_deletions() -> None:
    docs = [
        {"id": 1, "v": 1},
        {"id": 2, "v": 1},
        {"id": 1, "v": 2},
        {"id": 2, "_meta": {"op": "d"}},
        {"id": 3, "_meta": {"op": "u"}, "v": 1},
        {"id": 4, "v": 1},
        {"id": 4, "_meta": {"op": "d"}},
        {"id": 4, "v": 3},  # Re-created after its deletion.
        {"id": 5, "_meta": {"op": "d"}},  # Deleting an unknown key is a no-op.
    ]
    assert fh.reduce_by_key(docs, ["/id"]) == {
        (1,): {"id": 1, "v": 2},
        (3,): {"id": 3, "_meta": {"op": "u"}, "v": 1},
        (4,): {"id": 4, "v": 3},
    }
    compound = [{"a": {"b": 1}, "c": "x"}, {"a": {"b": 1}, "c": "y"}, {"c": "x"}]
    assert list(fh.reduce_by_key(compound, ["/a/b", "/c"])) == [(1, "x"), (1, "y"), (None, "x")]


def test_resolve_pointer_escapes() -> None:
    doc = {"a/b": {"m~n": [10, {"x": 1}]}}
    assert fh.resolve_pointer(doc, "/a~1b/m~0n/1/x") == 1
    assert fh.resolve_pointer(doc, "/a~1b/m~0n/0") == 10
    assert fh.resolve_pointer(doc, "/missing/x") is None
    assert fh.resolve_pointer(doc, "") == doc


def test_snapshot_normalisation_helpers() -> None:
    docs = [
        ("b", {"id": 2, "t": "x"}),
        ("a", {"id": 1, "nested": {"t": 1, "k": [{"t": 0}]}}),
        ("b", {"id": 3}),
    ]
    first = fh.first_per_collection(docs)
    assert first == [("a", docs[1][1]), ("b", docs[0][1])]
    assert fh.first_per_collection(docs, sort=False) == [("b", docs[0][1]), ("a", docs[1][1])]
    assert fh.redact(docs[1][1], {"t"}) == {"id": 1, "nested": {"t": "redacted", "k": [{"t": "redacted"}]}}
    assert list(fh.sort_keys({"b": 1, "a": {"d": 1, "c": 2}})["a"]) == ["c", "d"]


def test_flowctl_documents_combine_and_order_by_key() -> None:
    def commit(*docs: tuple[str, dict[str, Any]]) -> fh.Commit:
        cp = fh.Checkpoint(0, 0.0, list(docs), {}, [], {}, True)
        return fh.Commit(0, 0.0, [cp])

    collections = {
        "acmeCo/z": fh.Collection("acmeCo/z", ("/k",), {}),
        "acmeCo/a": fh.Collection("acmeCo/a", ("/k",), {}),
    }
    commits = [
        commit(
            ("acmeCo/a", {"k": 2, "v": 1}),
            ("acmeCo/z", {"k": "b"}),
            ("acmeCo/a", {"k": None}),
            ("acmeCo/z", {"k": 10}),
            ("acmeCo/z", {"k": "a"}),
            ("acmeCo/z", {"k": True}),
            ("acmeCo/a", {"k": 2, "v": 2}),
            ("acmeCo/a", {"k": 1.5, "_meta": {"op": "d"}}),
        ),
        commit(("acmeCo/a", {"k": 0})),
    ]
    result = fh.PreviewResult(capture="acmeCo/c", collections=collections, sessions=[], state={})
    result.sessions.append(fh.SessionResult(0, {}, {}, commits, "transactions", -9, False, 0, [], [], 0.0))
    uuid = {"uuid": fh.UUID_PLACEHOLDER}
    assert fh.flowctl_documents(result) == [
        # Binding order first (z was bound before a), then packed-key order within each.
        ("acmeCo/z", {"_meta": uuid, "k": "a"}),
        ("acmeCo/z", {"_meta": uuid, "k": "b"}),
        ("acmeCo/z", {"_meta": uuid, "k": 10}),
        ("acmeCo/z", {"_meta": uuid, "k": True}),
        ("acmeCo/a", {"_meta": uuid, "k": None}),
        ("acmeCo/a", {"_meta": uuid, "k": 2, "v": 2}),
        ("acmeCo/a", {"_meta": {"op": "d", **uuid}, "k": 1.5}),
        ("acmeCo/a", {"_meta": uuid, "k": 0}),  # The second transaction.
    ]


# --------------------------------------------------------------------------------------
# CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.flow_harness", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_preview_prints_flowctl_lines(scripted: Path) -> None:
    script: list[dict[str, Any]] = [
        OPENED,
        captured({"id": 2, "b": 1, "a": 0}),
        captured({"id": 1}),
        checkpoint({"c": 1}),
    ]
    done = run_cli(
        "preview", "--source", str(scripted), "--sessions", "1", "--delay", "200ms", "--output-state",
        "--config", json.dumps({"script": script}), "--initial-state", '{"old": 1}',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    uuid = {"uuid": fh.UUID_PLACEHOLDER}
    assert lines == [
        ["acmeCo/items", {"_meta": uuid, "id": 1}],
        ["acmeCo/items", {"_meta": uuid, "a": 0, "b": 1, "id": 2}],
        ["connectorState", {"updated": {"c": 1}, "mergePatch": True}],
        ["connectorState", {"updated": {"old": 1, "c": 1}, "mergePatch": False}],
    ]
    assert list(lines[1][1]) == ["_meta", "a", "b", "id"]


def test_cli_spec_discover_and_errors(scripted: Path) -> None:
    spec = run_cli("spec", "--source", str(scripted))
    assert spec.returncode == 0, spec.stderr
    assert list(json.loads(spec.stdout)) == [
        "protocol",
        "configSchema",
        "resourceConfigSchema",
        "documentationUrl",
        "resourcePathPointers",
    ]

    discovered = run_cli("discover", "--source", str(scripted))
    assert [json.loads(line)["recommendedName"] for line in discovered.stdout.splitlines()] == [
        "items",
        "archive",
    ]

    failed = run_cli(
        "preview", "--source", str(scripted), "--sessions", "1", "--config", '{"script": [{"exit": 2}]}'
    )
    assert failed.returncode == 1
    assert "exited before 'opened' (code 2)" in failed.stderr


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Every test must reap what it spawned: a leaked connector would keep running."""
    yield
    children = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True, check=False
    ).stdout
    assert "toy_connector" not in children, children
