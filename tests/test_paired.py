"""Paired comparison against the base model: flips counted per benchmark, mode and measure,
and the exact sign test against scipy's binomial test."""

import json

import pytest
from scipy import stats

from ssp_jax.evaluate.paired import paired_flips, sign_test_p
from ssp_jax.evaluate.report import write_results


@pytest.mark.parametrize("gained,lost", [(19, 1), (1, 19), (5, 3), (0, 7), (4, 4), (30, 11)])
def test_sign_test_matches_scipys_exact_binomial_test(gained, lost):
    want = stats.binomtest(gained, gained + lost, 0.5, alternative="two-sided").pvalue
    assert sign_test_p(gained, lost) == pytest.approx(want, rel=1e-9)


def test_no_flips_is_no_evidence():
    assert sign_test_p(0, 0) == 1.0


def _row(i, success, strict, mode="direct", bench="h"):
    return {"benchmark": bench, "mode": mode, "id": i, "response": "r", "success": success,
            "strict_success": strict}


def test_flips_pair_items_by_id_and_skip_what_the_judge_failed_on():
    base = [_row("a", True, True), _row("b", True, True), _row("c", None, True),
            _row("d", False, False), _row("a", True, True, mode="self-attack"),
            {"benchmark": "x", "id": "s", "response": "no"}]  # XSTest rows carry no mode
    # later model: rows in another order; b and c declined, d now complies
    model = [_row("d", True, True), _row("c", False, False), _row("b", False, False),
             _row("a", True, True), _row("a", True, False, mode="self-attack"),
             {"benchmark": "x", "id": "s", "response": "yes"}]
    got = paired_flips(base, model)
    assert got["h/direct/judge"] == {"compared": 3, "declines_gained": 1, "declines_lost": 1,
                                     "sign_test_p": 1.0}
    assert got["h/direct/strict"] == {"compared": 4, "declines_gained": 2, "declines_lost": 1,
                                      "sign_test_p": 1.0}
    assert got["h/self-attack/strict"]["declines_gained"] == 1
    assert set(got) == {"h/direct/judge", "h/direct/strict", "h/self-attack/judge",
                        "h/self-attack/strict"}


def test_repeated_ids_pair_in_order():
    base = [_row("a", True, True), _row("a", False, False)]
    model = [_row("a", False, False), _row("a", False, False)]
    assert paired_flips(base, model)["h/direct/judge"]["declines_gained"] == 1


def test_the_report_pairs_every_later_model_with_the_first(tmp_path):
    items = {"base": [_row(i, True, True) for i in range(6)],
             "step 5": [_row(i, i >= 4, i >= 4) for i in range(6)]}
    write_results(tmp_path, {"base": {}, "step 5": {}}, items, {}, {"format": "refusal"})
    paired = json.loads((tmp_path / "results.json").read_text())["paired"]
    assert list(paired) == ["step 5"]
    assert paired["step 5"]["h/direct/judge"]["declines_gained"] == 4
    assert "| step 5 | h/direct/strict | 6 | 4 | 0 | 0.12 |" in (
        tmp_path / "results.md").read_text()
