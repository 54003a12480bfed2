"""Regenerate `test.flow.yaml`'s bindings and `acmeCo/` from a discover against the emulator.

    python -m tests.regenerate_catalog        (or: make catalog)

The way `flowctl raw discover --source test.flow.yaml` would: the committed files are
discover's output, never edited by hand. The emulator listens on EMULATOR_PORT, the address
`test.flow.yaml`'s config names, so `make emulator` serves the same catalog to a flowctl user.
"""

from pathlib import Path

from tests import flow_harness
from tests.emulator import EmulatorServer, Knobs, Org

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "test.flow.yaml"
EMULATOR_PORT = 8765

# The emulator's own credentials (tests/emulator/knobs.py): not secrets.
ENDPOINT_CONFIG = f"""\
captures:
  acmeCo/source-bulk-export:
    endpoint:
      local:
        command: [python, -m, source_bulk_export]
        config:
          credentials:
            credentials_title: OAuth
            client_id: {Knobs().credentials.client_id}
            client_secret: {Knobs().credentials.client_secret}
            refresh_token: {Knobs().credentials.refresh_token}
          login_url: {{login_url}}
    bindings: []
"""
LOGIN_URL = f"http://127.0.0.1:{EMULATOR_PORT}"


def regenerate(catalog: Path = CATALOG, port: int = EMULATOR_PORT) -> list[Path]:
    """Rewrite `catalog` and the `acmeCo/` beside it from a discover against an emulator on
    `port` (0: any free port); the written config names LOGIN_URL whatever the port was."""
    with EmulatorServer(Org(), port=port) as emulator:
        catalog.write_text(ENDPOINT_CONFIG.replace("{login_url}", emulator.url))
        flow_harness.discover(flow_harness.load_source(catalog, cwd=REPO), write=True)
    catalog.write_text(catalog.read_text().replace(emulator.url, LOGIN_URL))
    return [catalog, *sorted((catalog.parent / "acmeCo").glob("*"))]


if __name__ == "__main__":
    for path in regenerate():
        print(f"wrote {path.relative_to(REPO)}")
