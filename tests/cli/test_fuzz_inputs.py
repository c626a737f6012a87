"""A seeded subset of the input fuzzer's corpus (benchmarks/fuzz_inputs.py): broken, hostile and odd image
files through `resshift upscale` and `POST /v1/upscale` with a tiny model. Each must end in a correct output
or a one-line error naming the file, within fuzz_inputs.SECONDS_LIMIT and RSS_LIMIT, never a traceback or a
500. The full corpus (about 580 cases) is `python benchmarks/fuzz_inputs.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fuzz_inputs  # noqa: E402

from resshift.web import ServeSettings, create_app  # noqa: E402

CASES = fuzz_inputs.seeded_subset(fuzz_inputs.make_corpus(seed=0), count=60, seed=0)


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    app = create_app(ServeSettings(models=(str(tiny_model_dir),), device="cpu", max_pixels=fuzz_inputs.MAX_PIXELS))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_subset_covers_every_kind():
    assert {case.kind for case in CASES} == {case.kind for case in fuzz_inputs.make_corpus(seed=0)}
    assert 50 <= len(CASES) <= 70


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_fuzzed_file_gets_an_output_or_one_error_line(case, tmp_path, tiny_model_dir, client, one_thread):
    for outcome in fuzz_inputs.run_case(case, tmp_path, tiny_model_dir, client):
        assert outcome.ok, f"{outcome.path}: {outcome.outcome}: {outcome.detail}"
