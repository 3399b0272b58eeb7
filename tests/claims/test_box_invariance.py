"""box_invariance (sanity): ‖x_k‖∞ under THEORY §3's envelope; a run outside it says no."""
import pandas as pd

from lionconv.claims import box_invariance
from synthetic import evaluate, write_rate_run


def test_box_envelope_claim(tmp_path):
    write_rate_run(tmp_path, "inside", weight_decay=0.5)            # x_linf = 0.5 at every step: under the envelope
    bad = write_rate_run(tmp_path, "outside", weight_decay=0.5, problem="other")
    m = pd.read_parquet(bad / "metrics.parquet")
    m.loc[m.index[-1], "x_linf"] = 10.0                        # outside the box 1/λ = 2 and the envelope
    m.to_parquet(bad / "metrics.parquet", index=False)
    rows = {r.scope: r for r in evaluate(tmp_path, box_invariance)[1]}
    assert rows["lion · scaled_separable · λ=0.5"].holds == "yes"
    assert rows["lion · scaled_separable · λ=0.5"].kind == "sanity"
    assert rows["lion · other · λ=0.5"].holds == "no" and rows["lion · other · λ=0.5"].measured > 4
