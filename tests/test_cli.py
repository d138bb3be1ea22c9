"""The command line is callable as main(argv) and every subcommand has --help on every flag."""

import pytest

from celseg.cli import COMMANDS, main


def test_top_level_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code != 0
    assert "frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help(name):
    import argparse
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"celseg {name}: flag {action.option_strings or action.dest} lacks help"


@pytest.mark.parametrize("name", ["train", "evaluate", "demo", "ablate"])
def test_set_takes_several_overrides_per_flag(name):
    import argparse
    import importlib

    from celseg.commands.options import flatten_overrides

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    required = ["-c", "x.yaml"] if name == "train" else []
    required += ["--ckpt", "x"] if name == "evaluate" else []
    args = parser.parse_args([*required, "--set", "a.b=1", "c.d=2", "--set", "e.f=3"])
    assert flatten_overrides(args.overrides) == ["a.b=1", "c.d=2", "e.f=3"]
