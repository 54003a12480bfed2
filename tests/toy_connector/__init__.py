"""Toy connectors that exercise `tests/flow_harness/` without any network.

Two programs live here:

* `python -m tests.toy_connector` is a real estuary-cdk capture (`connector.py`):
  one incremental+backfill resource (`items`) and one snapshot resource (`codes`).
  Everything it emits is a pure function of its endpoint config and its state, so
  tests can predict documents exactly; only CDK bookkeeping (`last_initialized`,
  snapshot `updated_at`) carries wall-clock time.
* `python -m tests.toy_connector.scripted` is not a CDK connector: it speaks the
  capture protocol by replaying a script from its endpoint config. Tests use it to
  control timing, exit codes and stderr volume exactly, and because it starts in
  milliseconds rather than the ~1.5 s the CDK takes to import.

This module imports nothing on purpose: importing the package must stay cheap for
`scripted`.
"""
