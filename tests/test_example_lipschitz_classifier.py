"""Smoke test of examples/lipschitz_classifier.py (one short training run)."""

import importlib.util
import pathlib
import sys

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "examples"
           / "lipschitz_classifier.py")


def _load():
    spec = importlib.util.spec_from_file_location("lipschitz_classifier",
                                                  EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_trains_reports_and_the_bound_holds_on_test_pairs():
    example = _load()
    model, history, test = example.train(epochs=2, method="operator",
                                         target_norm=1.0, shrink_only=False)
    assert set(history) == {"loss", "accuracy", "sigma/conv1", "sigma/conv2",
                            "sigma/head"}
    before = example.evaluate(model, test)
    assert before["empirical_lipschitz"] <= before["report"].lipschitz_bound
    example.reestimate(model)
    results = example.evaluate(model, test)
    report = results["report"]
    assert [row.name for row in report.rows] == ["conv1", "conv2", "head"]
    # Trained with the operator method and re-estimated: each layer's
    # operator norm is the target, 1, and so is the certified bound.
    for row in report.rows:
        assert row.operator_sigma == pytest.approx(1.0, rel=1e-3)
    assert report.lipschitz_bound == pytest.approx(1.0, rel=3e-3)
    assert results["empirical_lipschitz"] <= report.lipschitz_bound
    assert 0.0 <= results["certified"][0.1] <= results["accuracy"]
    assert results["accuracy"] > 0.3  # it learns something in two epochs


def test_help_explains_every_flag(monkeypatch, capsys):
    example = _load()
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        example.main()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--epochs", "--target-norm", "--no-shrink-only", "--method",
                 "--power-iterations", "--seed"]:
        assert flag in text
