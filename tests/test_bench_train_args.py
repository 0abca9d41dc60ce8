"""bench/bench_train.py and bench/bench_reload.py without training anything: arguments,
the trainer's environment, mlx-lm's report lines and the loop-time arithmetic."""

from __future__ import annotations

import pytest

from bench import bench_reload as R
from bench import bench_train as T


def test_train_defaults_and_quick() -> None:
    assert T.parse_args([]).steps == T.DEFAULT_STEPS
    args = T.parse_args(["--quick"])
    assert args.steps == T.QUICK_STEPS == T.DATASET_SIZE
    assert args.runs == list(T.RUNS)
    assert T.parse_args(["--runs", "mlx_lm_lora, worker_float32"]).runs == ["mlx_lm_lora", "worker_float32"]


@pytest.mark.parametrize("argv, words", [
    (["--steps", "30"], "multiple of 20"),
    (["--steps", "0"], "multiple of 20"),
    (["--steps", "-20"], "multiple of 20"),
    (["--runs", "foo"], "unknown run"),
    (["--runs", ","], "unknown run"),
    (["--runs", "mlx_lm_lora,mlx_lm_lora"], "at most once"),
    (["--threads", "0"], "--threads"),
    (["--wait-quiet", "-1"], "--wait-quiet"),
    (["--batch", "3"], "divide the dataset"),
    (["--batch", "1"], "--batch must be >= 2"),
])
def test_train_rejects_bad_arguments(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        T.parse_args(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--reps", "0"], "--reps"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--train-steps", "0"], "--train-steps"),
    (["--settle", "-1"], "--settle"),
])
def test_reload_rejects_bad_arguments(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        R.parse_args(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


def test_reload_reps() -> None:
    assert R.parse_args([]).reps == R.DEFAULT_REPS
    assert R.parse_args(["--quick"]).reps == R.QUICK_REPS
    assert R.parse_args(["--quick", "--reps", "5"]).reps == 5


def test_trainer_environment_is_read_from_supervisord_conf(tmp_path) -> None:
    env = T.trainer_environment()
    assert env["OPENBLAS_NUM_THREADS"].isdigit() and env["PYTHONUNBUFFERED"] == "1"
    conf = tmp_path / "s.conf"
    conf.write_text('[program:chat]\nenvironment=OPENBLAS_NUM_THREADS="9"\n'
                    '[program:trainer]\nenvironment=OPENBLAS_NUM_THREADS="3",FOO=bar\n')
    assert T.trainer_environment(conf) == {"OPENBLAS_NUM_THREADS": "3", "FOO": "bar"}


def test_mlx_lm_report_lines_are_recognised() -> None:
    # mlx-lm >= 0.30 (rich table; ANSI stripped) ...
    assert T.TABLE_HEADER.search("  iter   train_loss     tok/s     tokens")
    m = T.TABLE_TRAIN.match("    10    2.345 ▼    1,234      0.5k")
    assert m and (m.group(1), m.group(3), m.group(4)) == ("10", "1,234", "0.5")
    m = T.TABLE_VAL.match("     1    val 2.468    5.35s")
    assert m and (m.group(1), m.group(3)) == ("1", "5.35")
    # ... and the older "Iter N:" lines.
    m = T.OLD_TRAIN.search("Iter 10: Train loss 2.345, Learning Rate 1.000e-04, It/sec 0.512, "
                           "Tokens/sec 123.456, Trained Tokens 1234, Peak mem 0.456 GB")
    assert m and (m.group(4), m.group(5), m.group(6)) == ("123.456", "1234", "0.456")
    m = T.OLD_VAL.search("Iter 1: Val loss 2.468, Val took 5.350s")
    assert m and m.group(3) == "5.350"
    assert T.TRAINABLE.search("Trainable parameters: 1.803% (2.442M/135.515M)").group(2) == "2.442"


def test_loop_figures_subtract_validation() -> None:
    # Start at t=0, reports every 5 steps 10 s apart, a 2 s validation before step 20.
    reports = [(5, 10.0), (10, 20.0), (15, 30.0), (20, 42.0)]
    out = T.loop_figures(0.0, reports, [(1, 0.0, 1.0), (20, 0.0, 2.0)], 20, tokens_per_step=50.0)
    assert out["loop_s"] == 39.0  # 42 - 1 - 2
    assert out["tokens_per_s"] == round(20 * 50 / 39, 2)
    assert out["steady_s_per_step"] == 2.0  # (42 - 10 - 2) / 15
    assert out["steady_tokens_per_s"] == 25.0
    # An unfinished run has no figures.
    assert T.loop_figures(0.0, reports[:3], [], 20, 50.0)["tokens_per_s"] is None
