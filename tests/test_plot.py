"""minigpt_rlhf/plot.py: the columns read from a log, the trailing moving average, and the figure."""

import json
import sys

import numpy as np
import pytest

from minigpt_rlhf.data import DataError
from minigpt_rlhf.plot import Config, moving_average, plot_run, read_log


def write_log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_read_log_gives_one_column_per_numeric_key_with_nan_where_a_line_lacks_it(tmp_path):
    write_log(tmp_path / "log.jsonl", [{"step": 0, "loss": 2.5}, {"step": 1, "loss": 2.0, "val_loss": 2.2},
                                       {"step": 2, "loss": 1.5, "note": "text", "flag": True}])
    cols = read_log(tmp_path / "log.jsonl")
    assert sorted(cols) == ["loss", "step", "val_loss"]  # strings and booleans are not curves
    np.testing.assert_array_equal(cols["loss"], [2.5, 2.0, 1.5])
    np.testing.assert_array_equal(np.isnan(cols["val_loss"]), [True, False, True])
    assert cols["val_loss"][1] == 2.2


def test_read_log_names_the_line_that_is_not_json(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 0}\n{"step": 1,\n')
    with pytest.raises(DataError, match=r"log.jsonl:2: not valid JSON"):
        read_log(tmp_path / "log.jsonl")


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_moving_average_is_the_mean_of_the_trailing_window(k):
    x = np.random.default_rng(0).normal(size=20)
    expected = [x[max(0, i - k + 1): i + 1].mean() for i in range(len(x))]  # brute force
    np.testing.assert_allclose(moving_average(x, k), expected, rtol=1e-12, atol=1e-12)


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(SystemExit, match=r"pip install -e \"\.\[plot\]\""):
        plot_run(Config(out_dir=str(tmp_path)))


def test_plot_of_a_folder_without_logs_names_the_folder(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit, match=f"{tmp_path}: no base/, sft/, rm/ or ppo/ log.jsonl"):
        plot_run(Config(out_dir=str(tmp_path)))


def test_plot_draws_every_stage_that_has_a_log(tmp_path):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "base" / "log.jsonl", [{"step": i, "loss": 5.0 - i} for i in range(4)])
    write_log(tmp_path / "sft" / "log.jsonl", [{"step": i, "loss": 2.0, **({"val_loss": 1.9} if i == 3 else {})}
                                               for i in range(4)])
    write_log(tmp_path / "rm" / "log.jsonl", [{"step": i, "loss": 0.7, "accuracy": 0.6} for i in range(3)])
    write_log(tmp_path / "ppo" / "log.jsonl", [{"iteration": i, "rm_score": 0.1 * i, "gold_score": 0.5, "kl": 0.2 * i,
                                                "kl_coef": 0.1, "clipfrac": 0.05, "approx_kl": 0.01, "entropy": 0.4}
                                               for i in range(5)])
    path = plot_run(Config(out_dir=str(tmp_path), output=str(tmp_path / "c.png"), smooth=3))
    data = (tmp_path / "c.png").read_bytes()
    assert path == str(tmp_path / "c.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    h, w = imread(path).shape[:2]
    assert w > 5 * h  # five panels of 4.2 x 3.4 inches side by side (four would give w < 5 h)


def test_overoptimization_data_is_gold_and_rm_score_against_sqrt_kl_one_point_per_iteration(tmp_path):
    from minigpt_rlhf.plot import overoptimization_data

    rows = [{"kl": 0.0, "gold_score": 0.5, "rm_score": 0.1}, {"kl": 0.25, "gold_score": 0.6, "rm_score": 0.3},
            {"kl": 1.0, "gold_score": 0.7, "rm_score": 0.8, "round": 2,
             "rm_accuracy_vs_labels": 0.6}]  # a later RLHF round is logged on the line of the iteration it precedes
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = overoptimization_data(path, smooth=2)  # trailing means of 2 iterations, by hand:
    assert data["sqrt_kl"] == pytest.approx([0.0, 0.125 ** 0.5, 0.625 ** 0.5])
    assert data["gold_score"] == pytest.approx([0.5, 0.55, 0.65])
    assert data["rm_score"] == pytest.approx([0.1, 0.2, 0.55])
