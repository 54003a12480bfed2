"""``python -m tests.emulator`` runs standalone and prints where and how to log in."""

import json
import subprocess
import sys
from pathlib import Path

from tests.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent


def test_standalone_server_prints_url_and_credentials_then_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--rows", "1234", "--seed", "9", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        client = EmulatorClient(started["url"])
        client.login()
        total = client.query("SELECT COUNT() FROM BenchRecord__c").json()["totalSize"]
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0

    assert started["url"].startswith("http://127.0.0.1:")
    assert (started["client_id"], started["client_secret"], started["refresh_token"]) == (
        "emulator-client-id",
        "emulator-client-secret",
        "emulator-refresh-token",
    )
    assert total == 1234
