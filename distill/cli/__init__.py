"""The ``vlm-distill`` console script: one subcommand per module, rich only at this edge.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``vlm-distill harvest`` never pays for torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import select
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from vlmclient.errors import ConfigurationError, VLMError

from .config_file import CommandParser, apply_config_file, load_config_file
from .validate import path_arg

__all__ = [
    "COMMANDS",
    "EXIT_BUDGET",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "NEW_FOLDERS",
    "build_parser",
    "cannot_write_in",
    "check_new_folder",
    "check_out_file",
    "entry",
    "main",
]

# command name -> (module, one-line help). Order is the order of `vlm-distill --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("distill.cli.demo", "run the whole pipeline on the embedded default"),
    "harvest": ("distill.cli.harvest", "buy teacher embeddings for a dataset, under a budget"),
    "pseudolabel": ("distill.cli.pseudolabel", "label unlabelled images with teacher answers"),
    "train": ("distill.cli.train", "train a student from cached teacher outputs"),
    "eval": ("distill.cli.evaluate", "evaluate a trained run on a dataset, per domain"),
    "report": ("distill.cli.report", "spend and cache report from a cache or run folder"),
    "cache": ("distill.cli.cache_cmd", "inspect, verify, export or prune a response cache"),
    "serve-teacher": ("distill.cli.serve_teacher", "serve the local pay-per-query teacher"),
    "fit-teacher": ("distill.cli.fit_teacher", "fit the mini-clip teacher on a teacher pool"),
    "providers": ("distill.cli.providers", "list providers, models, env vars and prices"),
    "data": ("distill.cli.data", "build the bundled datasets (make-digits, ...)"),
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3

# command -> the flags (argparse dests) naming a folder the command creates before it sends
# or trains anything. One that cannot be created is a usage error (exit 2) found up front,
# not a file error after a model was loaded or a request was paid for.
NEW_FOLDERS: dict[str, tuple[str, ...]] = {
    "demo": ("workdir",),
    "harvest": ("cache",),
    "pseudolabel": ("cache",),
    "train": ("out",),
    "data": ("out",),  # make-digits, make-fashion, ... (scan has no --out)
}

log = logging.getLogger(__name__)


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-distill",
        description="Distil a pay-per-query vision-language teacher into a small local model.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v INFO, -vv DEBUG")
    # CommandParser records each command's flags, which --config files are checked against
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--config",
            type=path_arg,
            help="TOML or YAML file whose keys are this command's flag names (flags win)",
        )
        # also after the command (`vlm-distill harvest -v`); adds to a -v given before it
        # (its own dest: a command's parser counts from zero and would replace that one)
        p.add_argument(
            "-v",
            "--verbose",
            action="count",
            dest="verbose_after",
            default=argparse.SUPPRESS,
            help="-v INFO, -vv DEBUG (also before the command)",
        )
        importlib.import_module(mod).add_arguments(p)
        for action in p.subcommands.values():  # `cache stats --config F`: its own flags
            action.add_argument(
                "--config",
                type=path_arg,
                help="TOML or YAML file whose keys are this action's flag names (flags win)",
            )
            # `vlm-distill cache stats -v` as `harvest -v` (its own dest again: adds up)
            action.add_argument(
                "-v",
                "--verbose",
                action="count",
                dest="verbose_action",
                default=argparse.SUPPRESS,
                help="-v INFO, -vv DEBUG (also before the command)",
            )
        SUBPARSERS[name] = p
    return parser


SUBPARSERS: dict[str, CommandParser] = {}


def _config_path(argv: Sequence[str]) -> Path | None:
    """The ``--config`` file, read before the arguments are parsed (its keys become
    their defaults); an empty one is left to the argparse type, which refuses it.
    ConfigurationError when it is given twice: only one file would be read.

    argparse also takes a prefix (``--conf F``) for ``--config``, so prefixes count too
    (where one is ambiguous, ``--con`` beside ``--concurrency``, argparse refuses it).
    """
    values = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if len(flag) < 3 or not "--config".startswith(flag):
            continue
        if eq:
            values.append(value)
        elif i + 1 < len(argv):
            values.append(argv[i + 1])
    if len(values) > 1:
        raise ConfigurationError(
            "--config is given twice; give one file (merge the two, or use flags for the "
            "values that differ)"
        )
    return Path(values[0]) if values and values[0] else None


def check_new_folder(path: str | os.PathLike[str], flag: str) -> None:
    """ConfigurationError (one line) unless ``path`` is a folder or one can be made there.

    Tried with a temporary folder in the nearest existing parent, removed at once, so a
    check leaves nothing behind (a read-only or virtual file system refuses it as it
    would refuse the real folder).

    An empty path is refused too: ``Path("")`` is the current folder.

    >>> check_new_folder("/proc/no-such-cache", "--cache")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vlmclient.errors.ConfigurationError: cannot create the --cache folder /proc/no-such-cache...
    """
    if not os.fspath(path):
        raise ConfigurationError(
            f"the {flag} folder must not be empty (an empty path would mean the current "
            "folder; an unset variable?)"
        )
    folder = Path(path)
    if os.path.lexists(folder):
        if not folder.is_dir():  # a file (or a link to one) where the folder goes
            raise ConfigurationError(f"the {flag} folder {folder} is a file, not a folder")
        return  # a folder: the command itself says if it cannot use it, and why
    parent = Path(os.path.abspath(folder)).parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigurationError(
            f"cannot create the {flag} folder {folder}: {parent} is a file, not a folder"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vlm-distill-check-", dir=parent))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the {flag} folder {folder}: {exc.strerror or exc} (in {parent})"
        ) from None


def check_out_file(out: Path, flag: str, example: str) -> None:
    """ConfigurationError (one line) unless a file can be written at ``out``: checked
    before the work whose result it holds, not after it (a paid answer, a long run).

    >>> check_out_file(Path("/"), "--out", "eval.json")
    Traceback (most recent call last):
    ...
    vlmclient.errors.ConfigurationError: --out / is a folder; give a file name, e.g. /eval.json
    """
    if out.is_dir():
        raise ConfigurationError(
            f"{flag} {out} is a folder; give a file name, e.g. {out / example}"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigurationError(f"{flag} {out}: {out.parent} is a file, not a folder")
    check_new_folder(out.parent, flag)
    # a folder that exists: may a file be made in it (a read-only mount, chmod a-w)?
    why = cannot_write_in(out.parent) if out.parent.is_dir() else None
    if why is not None:
        raise ConfigurationError(f"cannot write {flag} {out}: {why} (in {out.parent})")


def cannot_write_in(folder: Path) -> str | None:
    """Why no new file can be made in the existing ``folder`` (a read-only mount, no write
    permission), or None. Tried with a temporary file, removed at once: file modes alone
    do not tell (root writes anyway; a read-only mount refuses even root).

    >>> with tempfile.TemporaryDirectory() as d:
    ...     cannot_write_in(Path(d)) is None
    True
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".vlm-distill-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def _stdout_closed() -> bool:
    """True when stdout is a pipe or socket whose reader went away (``... | head -1``)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a StringIO, closed
        return False
    if not hasattr(select, "poll"):  # Windows: no poll; the error came from stdout
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _os_error(command: str, exc: OSError) -> str:
    """One line for a file or socket error: what failed, on which path, and why."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return f"error: {command} failed: {why}"
    path = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        path += f" -> {os.fsdecode(exc.filename2)}"
    return f"error: {command} failed on a file: {path}: {why}"


class _QuietStdout:
    """``sys.stdout`` for one command: once it cannot be written (its reader went away,
    ``... | head -1``; a log file on a full disk), what is left of the output goes to
    devnull and the command carries on. A harvest stopped by a progress line cancelled
    its requests in flight (billed, their answers lost) and wrote no store; now it
    finishes and exits with its own code. A closed pipe is quiet; any other error is said
    once on stderr. Wrapped round stderr too (``warn=False``: nowhere to say it), an error
    line that cannot be written does not turn the command's exit code into 1."""

    def __init__(self, stream: TextIO, *, warn: bool = True) -> None:
        self._stream = stream
        self._warn = warn
        self._gone = False  # no descriptor to point at devnull: output is dropped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._to_devnull(exc)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._to_devnull(exc)

    def _to_devnull(self, exc: OSError) -> None:
        if self._warn and not isinstance(exc, BrokenPipeError):
            with contextlib.suppress(OSError, ValueError):  # stderr may be gone too
                print(
                    f"warning: the output cannot be written ({exc.strerror or exc}); the rest "
                    "of it is dropped, the command goes on",
                    file=sys.stderr,
                )
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()  # what could not be written, to devnull
        except (AttributeError, OSError, ValueError):
            self._gone = True


def entry() -> None:
    """The ``vlm-distill`` console script (and ``python -m distill``): :func:`main`, then
    exit with its code. The command has finished then; a stop signal (Ctrl-C) in the
    interpreter's teardown that follows (about a second once torch is loaded) ended a
    finished command as interrupted (exit 130, or killed by the signal with a traceback):
    it now ends the process at once with the command's own code."""
    code = main()
    from .signals import stop_signals

    def finished(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    for signum in stop_signals():
        signal.signal(signum, finished)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vlm-distill`` command; returns its exit code (see the README)."""
    stdout, quiet = sys.stdout, None
    if stdout is not None and not isinstance(stdout, _QuietStdout):
        quiet = _QuietStdout(stdout)
        sys.stdout = cast(TextIO, quiet)
    stderr, quiet_err = sys.stderr, None
    if stderr is not None and not isinstance(stderr, _QuietStdout):
        quiet_err = _QuietStdout(stderr, warn=False)
        sys.stderr = cast(TextIO, quiet_err)
    try:
        try:
            return _main(argv)
        finally:
            # Flushed here, not at exit: a reader that went away (`| head -1`) is seen
            # now, where it can be handled, and not as "Exception ignored" at exit.
            if sys.stdout is not None:
                sys.stdout.flush()
            if quiet is not None and sys.stdout is quiet:
                sys.stdout = stdout
            if quiet_err is not None and sys.stderr is quiet_err:
                sys.stderr = stderr
    except BrokenPipeError:
        # Python's "Note on SIGPIPE": send what is left of stdout to devnull, so the
        # interpreter's last flush does not fail again, and exit 1 without a traceback.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = _config_path(argv)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config is not None:
        command = next((a for a in argv if a in SUBPARSERS), None)
        try:
            if command is None:
                raise ConfigurationError(
                    "--config goes after the command: vlm-distill CMD --config F"
                )
            target = SUBPARSERS[command]
            rest = argv[argv.index(command) + 1 :]
            # `cache stats` (or `cache --config F stats`): the action's flags
            words = [
                a
                for i, a in enumerate(rest)
                if i == 0 or not (len(rest[i - 1]) >= 3 and "--config".startswith(rest[i - 1]))
            ]
            action = next((a for a in words if not a.startswith("-")), None)
            if action in target.subcommands:
                target = target.subcommands[action]
            apply_config_file(target, load_config_file(config), str(config))
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    args.verbose += getattr(args, "verbose_after", 0) + getattr(args, "verbose_action", 0)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(_available()[args.command][0])
    try:
        for dest in NEW_FOLDERS.get(args.command, ()):
            if getattr(args, dest, None) is not None:
                check_new_folder(getattr(args, dest), "--" + dest.replace("_", "-"))
        return int(module.run(args))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        from cache import CacheError, CacheLayoutError, LedgerWriteError, StoreError

        from .signals import Interrupted

        if isinstance(exc, CacheLayoutError):  # bad input, like a ConfigurationError
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, Interrupted):
            _say_interrupted(exc)
            return exc.exit_code
        if isinstance(exc, (CacheError, LedgerWriteError, StoreError)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            raise  # the reader of stdout went away: main() exits quietly
        if isinstance(exc, OSError):  # a folder that cannot be written, a full disk, ...
            log.debug("%s", args.command, exc_info=True)  # the traceback, with -vv
            print(_os_error(args.command, exc), file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt as exc:
        from .signals import Stopped

        if isinstance(exc, Stopped):  # SIGTERM, SIGHUP, SIGQUIT outside the paid loop
            _say_interrupted(exc)
            return exc.exit_code
        print("interrupted", file=sys.stderr)
        return 130


def _say_interrupted(exc: BaseException) -> None:
    """What a stop signal left behind; never claims in-flight answers were cached."""
    from .signals import Interrupted, say

    if isinstance(exc, Interrupted) and exc.during:
        say(f"stopped by {exc} {exc.during}")
        return
    say(
        f"stopped by {exc}: answers received before it are cached; requests that were in "
        "flight are recorded in the spend ledger at their worst-case cost (the provider "
        "may have billed them, their answers are lost); run again to resume"
    )


if __name__ == "__main__":
    sys.exit(main())
