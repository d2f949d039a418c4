"""align_full_batch and assemble_response on generated `full` rows, clean and corrupted."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import mementos_fast as mf
from mementos_fast import synthetic
from mementos_fast.full import ALIGN_STATUSES, ResponseLayout


@pytest.fixture(scope="module")
def full_rows():
    return synthetic.generate_full_rows(700, seed=11, corrupt_rate=0.6)


def test_every_corruption_is_reported_and_clean_rows_pass(full_rows):
    table = synthetic.generate_full_table(700, seed=11, corrupt_rate=0.6)
    out = mf.align_full_batch(table)
    assert out.num_rows == table.num_rows
    statuses = out.column("status").to_pylist()
    for row, status in zip(full_rows, statuses):
        assert status == (row["corruption"] or "ok")
    assert set(statuses) == set(ALIGN_STATUSES)  # every kind, and ok, occurs
    # clean rows: every block compared, exact or whitespace-equal
    ok = pc.equal(out.column("status"), "ok")
    clean = out.filter(ok)
    assert pc.sum(clean.column("blocks_different")).as_py() == 0
    assert pc.min(clean.column("min_similarity")).as_py() == 1.0
    assert pc.sum(clean.column("blocks_whitespace")).as_py() > 0
    assert pc.sum(clean.column("blocks_exact")).as_py() > 0


def test_problem_block_and_similarity(full_rows):
    table = synthetic.generate_full_table(700, seed=11, corrupt_rate=0.6)
    out = mf.align_full_batch(table).to_pylist()
    for row, res in zip(full_rows, out):
        if row["corruption"] == "block_text_differs":
            b = res["problem_block"]
            assert res["block_match"][b] == "different"
            assert 0.5 < res["block_similarity"][b] < 1.0  # one extra sentence: mostly the same words
        if row["corruption"] == "summary_mismatch":
            assert res["summaries_equal"] == res["n_blocks"] - 1


def test_layouts_chunks_and_nulls():
    table = synthetic.generate_full_table(40, seed=2, corrupt_rate=0.0)
    expect = mf.align_full_batch(table).column("status").to_pylist()
    large = table.cast(
        pa.schema(
            [
                (
                    f.name,
                    {
                        "sentences": pa.large_list(pa.large_string()),
                        "blocks": pa.large_list(pa.list_(pa.int32())),
                        "block_summaries": pa.list_(pa.string_view()),
                    }.get(f.name, f.type),
                )
                for f in table.schema
            ]
        )
    )
    assert mf.align_full_batch(large).column("status").to_pylist() == expect
    fixed = table.set_column(
        table.schema.get_field_index("blocks"), "blocks", table.column("blocks").cast(pa.list_(pa.list_(pa.int64(), 2)))
    )
    assert mf.align_full_batch(fixed).column("status").to_pylist() == expect
    # several record batches (chunked columns) and slices
    two = pa.Table.from_batches(table.to_batches(max_chunksize=7))
    assert mf.align_full_batch(two).column("status").to_pylist() == expect
    assert mf.align_full_batch(table.slice(5, 10)).column("status").to_pylist() == expect[5:15]
    # null response -> null row; null sentences -> null_field
    d = table.slice(0, 2).to_pydict()
    d["response"][0] = None
    d["block_summaries"][1] = None
    out = mf.align_full_batch(pa.table(d, schema=table.schema))
    assert out.column("status").to_pylist() == [None, "null_field"]
    with pytest.raises(mf.MementoValueError, match="missing"):
        mf.align_full_batch(table.drop_columns(["sentences"]))


def test_assemble_then_align_round_trip():
    table = synthetic.generate_full_table(60, seed=4, corrupt_rate=0.0)
    rebuilt = mf.assemble_response(table)
    again = table.set_column(table.schema.get_field_index("response"), "response", rebuilt.cast(pa.string()))
    out = mf.align_full_batch(again)
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert pc.sum(out.column("blocks_exact")).as_py() == pc.sum(out.column("n_blocks")).as_py()
    # the rebuilt responses parse clean and keep the answers
    parsed = mf.parse_batch(rebuilt)
    assert set(parsed.column("status").to_pylist()) == {"ok"}
    assert (
        parsed.column("final_answer").to_pylist()
        == mf.parse_batch(table.column("response")).column("final_answer").to_pylist()
    )


def test_assemble_other_layout():
    d = {"sentences": [["A b.", "C d."]], "blocks": [[[0, 1]]], "block_summaries": [["sum"]]}
    layout = ResponseLayout(
        block_start="<B>", block_end="</B>", summary_start="<S>", summary_end="</S>", pad="", after_unit="\n"
    )
    out = mf.assemble_response(d, layout=layout, answers=["42"]).to_pylist()
    assert out == ["<think>\n<B>A b. C d.</B>\n<S>sum</S>\n</think>\n42"]
    bad = {"sentences": [["A"]], "blocks": [[[0, 3]]], "block_summaries": [["s"]]}
    assert mf.assemble_response(bad).to_pylist() == [None]
