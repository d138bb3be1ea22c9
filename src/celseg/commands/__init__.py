"""One module per ``celseg`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
