"""docs/RUN_LAYOUT.md, lionconv/schema.py and the files a real run writes say the same thing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import REPO, compose_config
from lionconv import schema
from lionconv.train import launch


def test_run_layout_page_tables_are_the_schema_rendered():
    page = (REPO / "docs" / "RUN_LAYOUT.md").read_text()
    found = schema.blocks(page)
    assert sorted(found) == sorted(schema.TABLES)
    for key, fields in schema.TABLES.items():
        assert found[key] == schema.render(fields), f"regenerate: python -m lionconv.schema --write docs/RUN_LAYOUT.md ({key})"
    assert schema.refresh(page) == page


def test_render_is_a_markdown_row_per_field():
    fields = (schema.Field("a", "int", "first"), schema.Field("b", "float", "second", "sometimes"))
    assert schema.render(fields).splitlines() == [
        "| name | type | meaning | present in |", "|---|---|---|---|",
        "| `a` | int | first | always |", "| `b` | float | second | sometimes |"]
    assert schema.expected(fields) == ["a"] and schema.expected(fields, {"sometimes": True}) == ["a", "b"]
    assert schema.ordered(["x", "b", "a"], fields) == ["a", "b", "x"]


def test_names_refuses_a_column_not_in_the_layout():
    assert schema.names(schema.METRICS, "step", "grad_l1") == ["step", "grad_l1"]
    with pytest.raises(KeyError, match="grad_l3"):
        schema.names(schema.METRICS, "grad_l3")


def test_field_names_are_unique_per_table():
    for key, fields in schema.TABLES.items():
        assert len({f.name for f in fields}) == len(fields), key


@pytest.mark.parametrize("overrides,present", [
    (["problem.d=10", "steps=20", "optimizer=clion", "optimizer.weight_decay=0.5"],
     {schema.BOX: True, schema.CLION: True}),
    (["problem=digits_mlp", "problem.width=8", "steps=3", "optimizer=lion", "problem.val_fraction=0.1"],
     {schema.TEST_SPLIT: True, schema.CLASSIFIER: True, schema.VALIDATION: True}),
    (["problem=zero_chain", "steps=3", "optimizer=sgd"], {schema.ZERO_CHAIN: True}),
], ids=["synthetic", "classifier", "zero_chain"])
def test_a_real_run_writes_exactly_the_schema(tmp_path, overrides, present):
    cfg = compose_config(overrides + ["progress=off"], tmp_path=tmp_path)
    launch(cfg, "run", echo=lambda *_: None)
    run_dir, = [p for p in tmp_path.rglob("summary.json")]
    run_dir = run_dir.parent
    lion_family = "optimizer=sgd" not in overrides
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.yaml", "metrics.parquet", "summary.json", "tensor_metrics.parquet"]
        + ["tau_steps.parquet"] * lion_family)
    if lion_family:
        assert list(pd.read_parquet(run_dir / "tau_steps.parquet").columns) == schema.expected(schema.TAU_STEPS)
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.columns) == schema.expected(schema.METRICS, present)
    tensors = pd.read_parquet(run_dir / "tensor_metrics.parquet")
    assert list(tensors.columns) == schema.expected(schema.TENSOR_METRICS)
    kinds = {"int": "i", "float": "f"}
    for table, fields in ((metrics, schema.METRICS), (tensors, schema.TENSOR_METRICS)):
        for f in fields:
            if f.name in table and f.type in kinds:
                assert table[f.name].dtype.kind == kinds[f.type], f.name
    summary = json.loads((run_dir / "summary.json").read_text())
    blocks = {"always": True, "runs with a logged row": True, "Hydra installed": True, **present}
    assert sorted(summary) == sorted(schema.expected(schema.SUMMARY, blocks))
    for key in ("averages", "final", "constants", "provenance"):
        assert sorted(summary[key]) == sorted(schema.expected(schema.TABLES[f"summary.{key}"], blocks)), key
