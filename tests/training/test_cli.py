from training.cli import PLANNED, main


def test_planned_commands_are_listed_and_refuse_to_pretend(capsys) -> None:
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(command in listing for command in PLANNED)
    assert main(["train"]) == 2
    assert "not implemented yet" in capsys.readouterr().err
