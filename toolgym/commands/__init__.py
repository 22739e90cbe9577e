"""One module per ``toolgym`` command: ``add_parser(subparsers)`` and ``run(args) -> int``."""
