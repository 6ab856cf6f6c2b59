from training.cli import main


def test_without_a_command_the_usage_lists_every_step(capsys) -> None:
    assert main([]) == 0
    err = capsys.readouterr().out
    for command in ("data", "plan", "train", "merge", "quantize", "export-adapter", "eval"):
        assert command in err


def test_a_missing_config_file_is_named(capsys, tmp_path) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_eval_names_a_model_given_without_its_path(capsys) -> None:
    assert main(["eval", "--model", "tuned.gguf"]) == 2
    assert "expected NAME=PATH.gguf" in capsys.readouterr().err
