"""The report cites the paper its comparison column quotes, and says how far those numbers are checked."""

from __future__ import annotations

from reflectrl.eval.report import write_report


def test_the_paper_column_cites_the_paper(tmp_path):
    metrics = {"success": 0.5, "success_ci": [0.2, 0.8], "return": 0.1, "steps": 3.0, "invalid_rate": 0.0,
               "episodes": 4}
    curve = [{"iteration": 1, "env_steps": 8, "success": 0.5, "return": 0.1, "seconds": 1.0}]
    report = write_report(tmp_path, "taxi", {"reflect_rl": metrics}, {"reflect_rl": curve}).read_text()
    assert "PAPER.md" not in report  # a file of the repository, which a user of the package does not have
    assert "Zhou, Du and Li" in report and "ACL 2024" in report and "arXiv:2402.12621" in report
    assert "not checked against the paper" in report
    assert "| Reflect-RL | 50% [20%, 80%] |" in report and "58% (dropoff)" in report
