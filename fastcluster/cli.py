"""Command line: `fastcluster serve [APP] [options]` (also `python -m fastcluster`)."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, control, logs
from .config import Config, add_settings
from .errors import EXIT_USAGE, AppImportError, ConfigError
from .importer import check_app_string


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() tells it: $COLUMNS, stdout's terminal, or 80."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, given the width: left to find it, argparse imports shutil (and with it
    zlib, bz2 and lzma), and the master's memory is what every forked worker starts with."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, "fastcluster: error: %s (see '%s --help')\n" % (message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastcluster", description="A pre-forking WSGI and ASGI server with a compiled request loop.")
    parser.add_argument("--version", action="version", version="fastcluster %s" % __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = commands.add_parser(
        "serve", help="serve a WSGI or ASGI app",
        description="Serve a WSGI or ASGI app from pre-forked worker processes.",
        epilog="Signals to the master: SIGUSR2 or SIGHUP rolling restart, SIGTERM graceful stop, "
               "SIGINT graceful stop (twice: quick), SIGQUIT quick stop, SIGTTIN/SIGTTOU one worker more/fewer, "
               "SIGURG upgrade in place (a new master on the same socket).",
    )
    serve.add_argument("app", nargs="?", metavar="APP",
                       help='the WSGI or ASGI app as "module:attribute" (default: the built-in demo app; '
                            'env FASTCLUSTER_APP)')
    add_settings(serve)
    for name, text in (("reload", "rolling restart of every worker (SIGUSR2 to the master)"),
                       ("stop", "graceful stop (SIGTERM to the master), waiting until it exited"),
                       ("upgrade", "upgrade in place (SIGURG to the master): it re-executes its command line on "
                                   "the same socket, and the new master takes over once its workers are ready"),
                       ("status", "show the master, a rolling restart in progress, and each worker's counters")):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument("--pid", required=True, metavar="FILE", help="the --pid file of the running master")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print the whole status as JSON")
        if name in ("stop", "upgrade"):
            command.add_argument("--wait", type=float, default=60.0, metavar="S",
                                 help="seconds to wait for the master to exit (stop) or be replaced (upgrade) "
                                      "[default: 60]")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command != "serve":
        return control.run(args)
    logs.setup()
    try:
        config = Config.from_args(args)
        logs.setup(config.log_level, config.log_format)
        if config.app is not None:
            check_app_string(config.app)
            # Like `python -m`, gunicorn and uvicorn: the app is looked up from the current
            # directory too, also when started through the `fastcluster` console script.
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
        from .master import Master

        return Master(config, reload=lambda: Config.from_args(args)).run()
    except (ConfigError, AppImportError) as exc:
        print("fastcluster: error: %s" % exc, file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
