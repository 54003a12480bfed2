"""tests.bench_floor keeps working (it is run by hand and by `make bench`, never by CI otherwise)
and computes its ceilings from the stages it names. Nothing here times anything."""

import pytest

from tests import bench_floor
from tests.bench_floor import Floor


def test_the_ceilings_count_the_faster_parser_and_the_cdk_s_work_in_both() -> None:
    floor = Floor("X", 10, dict_reader=6.0, inflate=0.5, cdk_csv=2.5, stdlib_csv=3.5, row_function=1.0,
                  captured=2.0, receive=1.0, connector=12.0)

    assert floor.one_core == pytest.approx(0.5 + 2.5 + 1.0 + 2.0)
    assert floor.one_core_ceiling == pytest.approx(1.0)
    assert floor.main_process == pytest.approx(1.0 + 2.0)
    assert floor.parallel_ceiling == pytest.approx(2.0)
    assert floor.connector_ratio == pytest.approx(0.5)


def test_a_small_export_is_measured_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_floor.main(["--rows", "300", "--objects", "BenchRecord__c", "--repeat", "1"]) == 0

    out = capsys.readouterr().out
    assert "300 rows" in out
    for label in ("csv.DictReader", "CSV: the CDK's row processor", "the CDK per document", "one core: floor",
                  "this connector, in-process", "parallel: main process floor"):
        assert label in out
