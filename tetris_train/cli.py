"""What the command-line apps share: bad input becomes one line on stderr and exit status 2."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

from .config import AgentConfig, ScheduleConfig, TrainingConfig
from .env import EnvConfig
from .validation import ConfigError

EXIT_BAD_INPUT = 2
EXIT_JOBS_FAILED = 1
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by SIGINT
# options that Hydra's sweeper and launcher plugins add (pyproject.toml's sweep extra)
PLUGIN_OPTIONS = ("joblib", "submitit_local", "submitit_slurm")
GROUPS: dict[str, Any] = {"agent": AgentConfig, "env": EnvConfig, "schedule": ScheduleConfig}


def run_app(
    app: Callable[[], Any],
    schema: Any = TrainingConfig,
    config_name: str = "config",
    check: Optional[Callable[[Any, list[str]], None]] = None,
    usage: Optional[Callable[[], str]] = None,
) -> None:
    """Run a ``@hydra.main`` app; a config that cannot be composed ends with one line and exit status 2.

    With ``check`` (called with a composed config and its overrides), a single run's config
    (``--cfg`` included) or every job's of a grid multirun is composed and checked first
    (:func:`check_first`): bad input is refused before Hydra writes a folder and before the training
    stack loads. ``usage`` is the ``--help`` text. Output cut short by a closed pipe ends quietly."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    with closed_pipe_exits(), interrupted_exits():
        if usage is not None and ({"--help", "-h"} & set(sys.argv[1:])):
            print(usage())
            return
        run_checked(app, schema, config_name, check)


@contextlib.contextmanager
def interrupted_exits() -> Iterator[None]:
    """An exit with status 130 (interrupted) stays 130 under ``python -m``.

    CPython ends a ``python -m`` process by SIGINT itself, whatever its exit status, once a
    KeyboardInterrupt has ended a string ``eval``/``exec`` anywhere (typing's annotations and
    OmegaConf evaluate strings), even one that was caught. A string eval that completes clears that
    mark, so the status a script sees stays the one documented."""
    try:
        yield
    except SystemExit as exit:
        if exit.code == EXIT_INTERRUPTED:
            eval("None")  # clears the interpreter's unhandled-KeyboardInterrupt mark (see above)
        raise


def run_checked(
    app: Callable[[], Any], schema: Any, config_name: str, check: Optional[Callable[[Any, list[str]], None]]
) -> None:
    """:func:`run_app` once ``--help`` is answered: the checks, then the app, errors in one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        if check is not None:
            check_first(config_name, check, schema)
        app()
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training set its own handler
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except JobFailed as error:  # a multirun re-raises its first failed job's error once every job ran
        from .sweeps import SweepFolderCallback

        where = f" (sweep folder: {SweepFolderCallback.folder})" if SweepFolderCallback.folder else ""
        print(f"error: {error}{where}", file=sys.stderr)
        sys.exit(EXIT_JOBS_FAILED)
    except ValueError as error:
        if not str(error).startswith("Only one of --run, --multirun"):  # Hydra's answer to -m --cfg and the like
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (HydraException, OmegaConfBaseException) as error:
        message = describe_error(error, sys.argv[1:], schema)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


MAX_JOBS_CHECKED = 256  # a larger grid is left to its jobs, each of which is checked as it starts


def check_first(config_name: str, check: Callable[[Any, list[str]], None], schema: Any) -> None:
    """Compose the command line's config as Hydra will and ``check`` it: a single run's, or every
    job of a grid multirun (Hydra's basic sweeper). Nothing for a search (its jobs are proposed as
    it goes), ``--help`` and the like, or arguments Hydra itself refuses."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser

    if "--version" in sys.argv[1:]:
        return
    try:
        args = get_args_parser().parse_args(sys.argv[1:])
    except SystemExit:
        return  # Hydra prints its own usage message
    if any((args.help, args.hydra_help, args.info, args.shell_completion, args.experimental_rerun)) or any(
        (args.config_path, args.config_dir, args.config_name)
    ):
        return
    overrides = list(args.overrides)
    jobs = grid_jobs(overrides) if args.multirun else [overrides]
    with initialize_config_module("tetris_train.conf", version_base="1.3"):
        for job in jobs or ():
            with bad_input_exits(job, schema):
                cfg = compose(config_name, overrides=job)
                check(cfg, [o for o in job if not o.lstrip("+~").startswith(("hydra.", "hydra/"))])  # as the job's


def grid_jobs(overrides: list[str]) -> Optional[list[list[str]]]:
    """Each job's overrides of a multirun on Hydra's basic sweeper (every combination of the
    comma-separated values); None for a search or a grid Hydra itself refuses or too large to check."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(o.lstrip("+~").split("=", 1)[0] in ("hparams_search", "hydra/sweeper") for o in overrides):
        return None
    try:
        jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
    except HydraException:
        return None
    return jobs if len(jobs) <= MAX_JOBS_CHECKED else None


@contextlib.contextmanager
def closed_pipe_exits() -> Iterator[None]:
    """Output piped into a command that stops reading early (``| head``) ends the program quietly,
    as a shell tool does, instead of with a BrokenPipeError traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit fails too
        sys.exit(EXIT_JOBS_FAILED)


class BadInputExit(SystemExit):
    """Exit status 2 for bad input, carrying the one-line ``message`` already printed."""

    def __init__(self, message: str):
        super().__init__(EXIT_BAD_INPUT)
        self.message = message


def refuse(message: str) -> BadInputExit:
    """A setting that cannot work, found past the config's own checks: printed as one line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return BadInputExit(message)


class RunFailed(SystemExit):
    """Exit status 1 for a run stopped by a failure outside the program (a full disk, a read-only
    folder), carrying the one-line ``message`` already printed."""

    def __init__(self, message: str):
        super().__init__(EXIT_JOBS_FAILED)
        self.message = message


class JobFailed(Exception):
    """A multirun job that failed. The sweep goes on with its other jobs (a sweeper counts it as a
    failed trial); the command ends with this one-line message and exit status 1."""


@contextlib.contextmanager
def bad_input_exits(
    overrides: Sequence[str], schema: Any = TrainingConfig, kinds: tuple[type[Exception], ...] = (Exception,)
) -> Iterator[None]:
    """Inside a Hydra job: bad input (of ``kinds``) exits at once (a failed job would add Hydra's own report)."""
    try:
        yield
    except kinds as error:
        message = describe_error(error, overrides, schema)
        if message is None:
            raise
        raise refuse(message) from None


class ResumeError(ValueError):
    pass


def describe_error(error: BaseException, overrides: Sequence[str] = (), schema: Any = TrainingConfig) -> Optional[str]:
    """One line for an error in the user's input, or None for anything else (a real failure)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if str(error).startswith("BasicSweeper does not support sweep type"):
        return (
            f"{error}: interval(), tag() and the like need an Optuna search "
            f"(hparams_search=dqn_optuna or hydra/sweeper=optuna_search)"
        )
    if isinstance(error, ConfigError):
        prefix = {"AgentConfig": "agent.", "EnvConfig": "env.", "ScheduleConfig": "schedule."}.get(error.owner, "")
        typed = given_value(f"{prefix}{error.field}", overrides)
        value = typed if typed is not None else as_typed(error.value)
        return f"{prefix}{error.field}={value} is invalid: expected {error.allowed}"
    if isinstance(error, OverrideParseException):
        return unparsable_override(overrides) or " ".join(str(error).split())
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        message = f"{group}={name}: no such option; available: {', '.join(sorted(error.options))}"
        if group in ("hydra/sweeper", "hydra/launcher") and name in PLUGIN_OPTIONS:
            message += f"; {name} is a Hydra plugin of the sweep extra: pip install 'tetris-train[sweep]'"
        return message
    from .checkpoints import CheckpointError

    if isinstance(error, (ResumeError, CheckpointError, FileNotFoundError, MemoryError)):
        return " ".join(str(error).split())
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    key = getattr(cause, "full_key", None)
    given = given_value(key, overrides) if key else None
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key and str(key).startswith("hydra."):
        return f"{key}={given}: no such key in Hydra's settings; see them with: python -m tetris_train --cfg hydra"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        group = key.rpartition(".")[0]
        where = f"keys of {group}" if group else "top-level keys"
        return f"{key}={given}: no such key; allowed {where}: {allowed_keys(group, schema)}"
    if isinstance(cause, OmegaConfBaseException) and key:
        expected = expected_type(key, schema)
        if given is not None and expected is not None:
            return f"{key}={given} is invalid: expected {expected}"
        return f"{key}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    if isinstance(error, (OverrideParseException, ConfigCompositionException, OmegaConfBaseException)):
        return " ".join(str(error).split())
    return None


def as_typed(value: Any) -> str:
    """A value as it is written on the command line and in YAML: null, true, false, 'text', 3."""
    if value is None or isinstance(value, bool):
        return show_default(value)
    return repr(value)


def unparsable_override(overrides: Sequence[str]) -> Optional[str]:
    """The first override Hydra's grammar refuses, with the parser's reason, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as error:
            reason = str(error).split(" See https://")[0].strip()
            return (
                f"{override}: cannot parse the value ({reason}); lists are written [a,b], and a value with "
                f"spaces or brackets is quoted: key='...'"
            )
    return None


def given_value(key: str, overrides: Sequence[str]) -> Optional[str]:
    """The value the command line gave for ``key``, as typed."""
    for override in overrides:
        name, sep, value = override.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def allowed_keys(group: str, schema: Any = TrainingConfig) -> str:
    klass = GROUPS.get(group, schema)
    return ", ".join(f.name for f in dataclasses.fields(klass))


def expected_type(full_key: str, schema: Any = TrainingConfig) -> Optional[str]:
    group, _, name = full_key.rpartition(".")
    klass = GROUPS.get(group, schema if not group else None)
    fields = {f.name: f.type for f in dataclasses.fields(klass)} if klass else {}
    kind: Any = fields.get(name)
    if kind is None:
        return None
    names = {
        "float": "a number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a string",
        "tuple[int, ...]": "a list of integers, e.g. [64, 64]",
        "tuple[float, ...]": "a list of numbers, e.g. [0, 10, 40, 90, 160]",
    }
    if str(kind) in names:
        return names[str(kind)]
    kind = str(kind).replace("Optional[", "null or ").rstrip("]") if str(kind).startswith("Optional[") else str(kind)
    return " ".join(names.get(word, word) for word in kind.split(" "))


# -- help -----------------------------------------------------------------------------------------

COMMANDS = (
    ("python -m tetris_train [key=value ...]", "train; a run folder under outputs/runs/"),
    ("python -m tetris_train -m key=a,b ...", "a sweep: one job per combination, under outputs/sweeps/"),
    ("python -m tetris_train.evaluate checkpoint=<run>", "play a trained agent (or player=heuristic) on fixed games"),
    ("python -m tetris_train.report <sweep folder>", "tables and plots of a sweep"),
    ("python -m tetris_train.demo [player=heuristic]", "watch a game in the terminal"),
)


def field_docs(klass: Any) -> dict[str, str]:
    """What each field of a config dataclass means, from the ``Attributes:`` section of its docstring."""
    docs: dict[str, str] = {}
    lines = (klass.__doc__ or "").splitlines()
    inside, name = False, None
    for line in lines:
        text = line.strip()
        if text == "Attributes:":
            inside = True
        elif inside and text:
            head, sep, rest = text.partition(": ")
            if sep and head.isidentifier():
                name = head
                docs[name] = rest
            elif name:
                docs[name] += " " + text
    return docs


def group_options(group: str) -> list[str]:
    """The options of a config group under ``conf/``."""
    from importlib.resources import files

    folder = files("tetris_train.conf") / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def show_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def key_lines(klass: Any, prefix: str) -> list[str]:
    """``prefix.key=default  meaning`` for each field of ``klass`` that is not itself a group."""
    docs = field_docs(klass)
    lines = []
    for f in dataclasses.fields(klass):
        if f.name in GROUPS:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            continue
        lines.append(f"  {prefix}{f.name}={show_default(default)}".ljust(40) + f" {docs.get(f.name, '')}")
    return lines


GROUP_TITLES = {
    "agent": "the DQN's hyperparameters",
    "env": "the game",
    "schedule": "training length, checkpoints, evaluation, logging",
    "hparams_search": "a search's sweeper, with -m (needs the sweep extra)",
}


def default_options(config_name: str) -> dict[str, Any]:
    """The option each group takes by default: the defaults list of ``conf/<config_name>.yaml``."""
    from importlib.resources import files

    import yaml

    defaults = yaml.safe_load((files("tetris_train.conf") / f"{config_name}.yaml").read_text()).get("defaults", [])
    return {k: v for item in defaults if isinstance(item, dict) for k, v in item.items()}


def usage_text(
    title: str, command: str, schema: Any, groups: Sequence[str], config_name: str, notes: Sequence[str] = ()
) -> str:
    """``--help`` of a command: what it does, the other commands, its groups and every key with its
    default and meaning (from the config dataclasses' docstrings)."""
    out = [title, "", f"usage: {command}", "", "commands (each takes --help):"]
    out += [f"  {c}".ljust(52) + f" {what}" for c, what in COMMANDS]
    chosen = default_options(config_name)
    out += ["", "groups (group=option; * marks the default):"]
    for g in groups:
        options = ", ".join(f"{o}*" if o == chosen.get(g) else o for o in group_options(g))
        out.append(f"  {g}: {options}".ljust(40) + f" {GROUP_TITLES.get(g, '')}")
    out += ["", "keys (key=value, shown with their defaults):"]
    out += key_lines(schema, "")
    for group in groups:
        klass = GROUPS.get(group)
        if klass is not None:
            out += ["", f"{group}: {GROUP_TITLES[group]}"] + key_lines(klass, f"{group}.")
    out += ["", *notes] if notes else []
    out += [
        "",
        "Hydra: --cfg job prints the composed config (checked) and stops; -m runs a sweep;",
        "--hydra-help lists Hydra's own options (launchers, sweepers, output folders).",
    ]
    return "\n".join(out)
