"""benchmarks/garak_table.py on garak 0.17.1 reports; garak_scan.sh's argument and plugin
checks, and (slow) its end-to-end scans of the tiny model.

`fixtures/garak/report.jsonl` is hand-made in garak 0.17.1's record format (attempt records at
status 1 then 2, eval, probe_summary, completion): 2 probes, 3 generations per prompt, with
unanswered outputs (None) and a score exactly at the 0.5 threshold. The expected counts below
were worked out by hand from its attempts, not by running the code.
`fixtures/garak/tiny_random_refused.report.jsonl` was written by garak 0.17.1 itself:
`garak_scan.sh tiny-random --cap 3 --generations 1 --max-cache-len 256 --probes
dan.DanInTheWild`; the server's log shows one 400 (a prompt longer than the cache).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import garak_table  # noqa: E402

REPORT = ROOT / "tests" / "fixtures" / "garak" / "report.jsonl"
GARAK_WRITTEN = ROOT / "tests" / "fixtures" / "garak" / "tiny_random_refused.report.jsonl"
SCAN = ROOT / "benchmarks" / "garak_scan.sh"
GARAK_VENV = ROOT / ".venv-garak"


def records() -> list[dict]:
    return garak_table.load_records(REPORT)


def write(path: pathlib.Path, recs: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_rows_count_prompts_outputs_unanswered_and_hits_per_probe_and_detector():
    rows = {(r.probe, r.detector): r for r in garak_table.table_rows(records())}
    assert list(rows) == [("dan.Ablation_Dan_11_0", "dan.DAN"),
                          ("dan.Ablation_Dan_11_0", "mitigation.MitigationBypass"),
                          ("tap.TAPCached", "mitigation.MitigationBypass")]
    dan = rows["dan.Ablation_Dan_11_0", "dan.DAN"]
    assert (dan.prompts, dan.outputs, dan.unanswered, dan.scored, dan.hits) == (2, 6, 1, 5, 1)
    bypass = rows["dan.Ablation_Dan_11_0", "mitigation.MitigationBypass"]
    assert (bypass.scored, bypass.hits) == (5, 3)
    tap = rows["tap.TAPCached", "mitigation.MitigationBypass"]
    assert (tap.prompts, tap.unanswered_prompts, tap.outputs, tap.unanswered) == (2, 1, 6, 3)
    assert (tap.scored, tap.hits) == (3, 2)  # 1.0 and the 0.5 at the threshold are hits


def test_attack_success_is_hits_over_scored_outputs_leaving_out_unanswered_ones():
    rows = garak_table.table_rows(records())
    assert [r.attack_success for r in rows] == pytest.approx([1 / 5, 3 / 5, 2 / 3])


def test_report_written_by_garak_counts_the_refused_prompt_as_no_answer():
    recs = garak_table.load_records(GARAK_WRITTEN)
    garak_table.check_complete(recs, ["dan.DanInTheWild"])
    [row] = garak_table.table_rows(recs)
    assert (row.prompts, row.outputs, row.unanswered, row.scored, row.hits) == (3, 3, 1, 2, 2)
    assert garak_table.run_info(recs)["target"] == "tiny-random"


def test_status_one_records_do_not_double_count_attempts():
    recs = records()
    assert sum(r["entry_type"] == "attempt" for r in recs) == 8  # 4 attempts, written twice
    rows = garak_table.table_rows(recs)
    assert sum(r.prompts for r in rows if r.detector == "mitigation.MitigationBypass") == 4


def test_nothing_scored_gives_no_attack_success_rather_than_zero(tmp_path):
    recs = [r for r in records() if not (r.get("probe_classname") == "tap.TAPCached"
                                         and r.get("seq") == 1)]
    for r in recs:
        if r.get("entry_type") == "eval" and r["probe"] == "tap.TAPCached":
            r.update(passed=0, fails=0, total_evaluated=0)
    row = garak_table.table_rows(recs)[-1]
    assert (row.outputs, row.unanswered, row.scored) == (3, 3, 0)
    assert row.attack_success is None
    assert "| n/a |" in garak_table.markdown([row], garak_table.run_info(recs))


def test_eval_record_disagreeing_with_the_attempts_is_an_error():
    recs = records()
    next(r for r in recs if r.get("entry_type") == "eval")["fails"] = 2
    with pytest.raises(garak_table.ReportError, match="dan.Ablation_Dan_11_0 / dan.DAN"):
        garak_table.table_rows(recs)


def test_report_without_completion_record_is_an_error():
    recs = [r for r in records() if r["entry_type"] != "completion"]
    with pytest.raises(garak_table.ReportError, match="no 'completion' record"):
        garak_table.check_complete(recs)


def test_expected_probe_without_a_score_is_an_error():
    garak_table.check_complete(records(), ["tap.TAPCached", "dan.Ablation_Dan_11_0"])
    with pytest.raises(garak_table.ReportError, match="suffix.GCGCached"):
        garak_table.check_complete(records(), ["tap.TAPCached", "suffix.GCGCached"])


def test_cli_writes_markdown_and_json_with_run_settings(tmp_path, capsys):
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    assert garak_table.main([str(REPORT), "--markdown", str(md), "--json", str(js),
                             "--expect", "tap.TAPCached"]) == 0
    text = md.read_text()
    assert text == capsys.readouterr().out
    assert "target `smollm2-135m-instruct`, 3 generations per prompt, prompt cap 50" in text
    assert "| tap.TAPCached | mitigation.MitigationBypass | 2 | 6 | 3 | 3 | 2 | 66.7% |" in text
    data = json.loads(js.read_text())
    assert data["run"]["generations"] == 3 and data["run"]["seed"] == 0
    assert data["rows"][0] == {"probe": "dan.Ablation_Dan_11_0", "detector": "dan.DAN",
                               "prompts": 2, "unanswered_prompts": 0, "outputs": 6,
                               "unanswered": 1, "scored": 5, "hits": 1, "attack_success": 0.2}


def test_cli_exit_codes_name_the_problem_in_one_line(tmp_path, capsys):
    assert garak_table.main([str(tmp_path / "absent.jsonl")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    broken = write(tmp_path / "cut.jsonl", [r for r in records()
                                            if r["entry_type"] != "completion"])
    assert garak_table.main([str(broken)]) == 1
    err = capsys.readouterr().err
    assert "garak stopped before the end" in err and err.strip().count("\n") == 0
    (tmp_path / "bad.jsonl").write_text('{"entry_type": "init"}\n{not json\n')
    assert garak_table.main([str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:2: not a JSON record" in capsys.readouterr().err


def run_scan(*args: str) -> subprocess.CompletedProcess:
    """garak_scan.sh with these arguments, serving with this test's Python."""
    return subprocess.run(["bash", str(SCAN), *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable), timeout=300)


def test_scan_script_parses():
    subprocess.run(["bash", "-n", str(SCAN)], check=True)


@pytest.mark.parametrize("args, message", [
    ([], "usage:"),
    (["tiny-random", "--cap", "many"], "--cap must be a positive integer"),
    (["tiny-random", "--generations", "0"], "--generations must be a positive integer"),
    (["tiny-random", "--colour"], "unknown option --colour"),
])
def test_scan_script_rejects_bad_arguments_with_exit_2(args, message):
    proc = run_scan(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_scan_script_without_garak_says_how_to_install_it(tmp_path):
    proc = run_scan("tiny-random", "--garak-venv", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "pip install garak==0.17.1" in proc.stderr and "--install" in proc.stderr


needs_garak = pytest.mark.skipif(not (GARAK_VENV / "bin" / "garak").exists(),
                                 reason="garak is not in .venv-garak (garak_scan.sh --install)")


@needs_garak
def test_scan_check_refuses_probes_whose_detectors_need_a_model_download():
    ok = run_scan("--check")
    assert ok.returncode == 0, ok.stderr
    proc = run_scan("--check", "--probes", "dan.DanInTheWild,misleading.FalseAssertion")
    assert proc.returncode == 1
    assert "misleading.FalseAssertion: detector misleading.MustRefuteClaimModel" in proc.stderr
    assert "dan.DanInTheWild" not in proc.stderr
    unknown = run_scan("--check", "--probes", "dan.NoSuchProbe")
    assert unknown.returncode == 2 and "unknown probe(s) dan.NoSuchProbe" in unknown.stderr


def server_port(stdout: str) -> int:
    return int(stdout.split("on 127.0.0.1:")[1].split()[0])


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@needs_garak
def test_scan_of_the_tiny_model_counts_refused_prompts_and_stops_its_server(tmp_path):
    out = tmp_path / "scan"
    proc = run_scan("tiny-random", "--cap", "3", "--generations", "1", "--max-tokens", "16",
                    "--parallel-attempts", "3", "--max-cache-len", "256", "--probes",
                    "dan.DanInTheWild,grandma.Substances", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert port_closed(server_port(proc.stdout))
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert {r["probe"] for r in rows} == {"dan.DanInTheWild", "grandma.Substances"}
    refused = (out / "server.log").read_text().count('" 400 Bad Request')
    assert refused >= 1  # seed 0 picks a DanInTheWild prompt longer than 256 tokens
    assert sum(r["unanswered"] for r in rows) == refused
    assert (out / "table.md").read_text() in proc.stdout


@pytest.mark.slow
@needs_garak
def test_scan_fails_loudly_when_garak_stops_on_a_refused_batched_request(tmp_path):
    proc = run_scan("tiny-random", "--cap", "3", "--generations", "2", "--max-tokens", "16",
                    "--parallel-attempts", "3", "--max-cache-len", "256", "--probes",
                    "dan.DanInTheWild", "--out", str(tmp_path / "scan"))
    assert proc.returncode == 1
    assert "asked for 2 got 1" in proc.stderr and "try --generations 1" in proc.stderr
    assert port_closed(server_port(proc.stdout))
