"""The option table of :mod:`deepaas_like.settings` as the command line, the configuration
files and the sample file see it, and the :class:`Settings` they describe.

- Command line (argparse): the flags DEEPaaS has (``--listen-port``, ``--model-name``), in
  one titled group of ``--help`` per section; a boolean is ``--warm`` / ``--nowarm``
  (oslo.config's and DEEPaaS's spelling), ``--no-warm`` is accepted too and not shown.
- Files (oslo.config): each option in its section (``[http] listen_port``), and in
  ``[DEFAULT]`` too, where DEEPaaS's files have every option; ``[model:NAME]`` sections set
  one model's options.
- A value comes from the command line, else its section, else ``[DEFAULT]``, else its default.
- :func:`list_opts` is oslo-config-generator's entry point (``oslo.config.opts``:
  ``deepaas_like``, see setup.cfg), which writes etc/deepaas_like.conf.sample.

Option names and defaults follow DEEPaaS 2.6 where it has the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from oslo_config import cfg

from deepaas_like.settings import (
    AUTH_ENV,
    MODEL_ENV,
    SECTIONS,
    ModelSettings,
    Option,
    Section,
    Settings,
    default_database_url,
    in_memory_database,
    model_names,
    options,
)

__all__ = [
    "AUTH_ENV",
    "EPILOG",
    "MODEL_ENV",
    "MODEL_SECTION",
    "add_arguments",
    "list_opts",
    "model_names",
    "parser",
    "read",
]

LOG = logging.getLogger(__name__)

#: A model's section, ``[model:NAME]``: the per-model options, unset unless the section sets them.
MODEL_SECTION = "model:"
#: The deprecated per-model options (name:value pairs) -> the field a ``[model:NAME]`` section sets instead.
DEPRECATED_PER_MODEL = {"model-workers": "workers", "model-predict-timeout": "predict_timeout"}
#: The project name oslo.config looks for default files by (``~/.deepaas_like/deepaas_like.conf``, ...).
PROJECT = "deepaas_like"

EPILOG = (
    "Every option can also be set in its section of a file given with --config-file ([http] listen_port = "
    "5000; [DEFAULT] is read too, as DEEPaaS writes it; see etc/deepaas_like.conf.sample), and for one "
    "model in a [model:NAME] section. Trainings and asynchronous predictions are kept in the job database "
    f"(--database-url; default: {default_database_url()})."
)


def _default(field: dataclasses.Field[Any]) -> Any:
    """The field's default as the option takes it: lists for tuples, None for unset."""
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = field.default
    return list(default) if isinstance(default, tuple) else default


def _opt(field: dataclasses.Field[Any], **override: Any) -> cfg.Opt:
    option = field.metadata["option"]
    arguments = {"default": _default(field), "help": option.help, **option.extra, **override}
    return option.kind(option.name, **arguments)


#: Option name -> its oslo.config option (type, bounds, default), for every option.
OPTS: dict[str, cfg.Opt] = {option.name: _opt(field) for field, option in options()}


def _in(section: Section) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The options of ``section``, by name."""
    return sorted(((f, o) for f, o in options() if o.section == section.name), key=lambda pair: pair[1].name)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Each section with its options, then the per-model options of a ``[model:NAME]``
    section (oslo-config-generator's entry point).
    """
    sections = [(cfg.OptGroup(s.name, help=s.help), [OPTS[o.name] for _, o in _in(s)]) for s in SECTIONS]
    model = cfg.OptGroup(
        MODEL_SECTION + "name", help="One model's options (any set here wins, for model NAME, over its section's)."
    )
    return [*sections, (model, _model_opts())]


def _model_opts() -> list[cfg.Opt]:
    return [
        _opt(field, default=None, sample_default=f"<the [{option.section}] value>")
        for field, option in sorted(options(ModelSettings), key=lambda pair: pair[1].name)
    ]


# The command line


class _Switch(argparse.Action):
    """A boolean: ``--NAME`` sets it, ``--noNAME`` (its second spelling) clears it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string == self.option_strings[0])


class _Source(argparse.Action):
    """``--config-file`` and ``--config-dir``, kept in the order given (a later one wins)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), option_string, values])


class _Completion(argparse.Action):
    """``--shell_completion bash|zsh``: oslo.config's script completing every option's flag."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf.register_cli_opts(list(OPTS.values()))
        conf(["--shell_completion", values], prog=parser.prog, default_config_files=[], default_config_dirs=[])


def _help(opt: cfg.Opt) -> str:
    """``opt``'s help for argparse (``%`` doubled), with its default where it has one worth showing."""
    default = opt.default
    if isinstance(opt, cfg.BoolOpt):
        shown: str | None = "on" if default else "off"
    elif default in (None, "", [], {}):
        shown = None
    else:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
    text = f"{opt.help} Default: {shown}." if shown is not None else str(opt.help)
    return text.replace("%", "%%")


def _add_argument(container: Any, name: str, default: Any) -> None:
    opt = OPTS[name]
    if isinstance(opt, cfg.BoolOpt):
        container.add_argument(
            f"--{name}", f"--no{name}", action=_Switch, dest=opt.dest, default=default, help=_help(opt)
        )
        container.add_argument(
            f"--no-{name}", action="store_false", dest=opt.dest, default=default, help=argparse.SUPPRESS
        )
        return
    container.add_argument(
        f"--{name}",
        action="append" if opt.multi else "store",
        dest=opt.dest,
        default=default,
        help=_help(opt),
        metavar=opt.dest.upper(),
    )


def add_arguments(container: Any, names: Iterable[str]) -> None:
    """Add the options ``names`` (``model-name``) to an argparse parser or group, with their
    defaults: for a command that reads a few of them (deepaas-like-cli). The values are as
    given (strings; lists of them for repeated options), booleans True or False.
    """
    for name in names:
        _add_argument(container, name, _default_of(name))


def _default_of(name: str) -> Any:
    return next(_default(field) for field, option in options() if option.name == name)


def parser(
    prog: str | None = None, description: str | None = None, version: str | None = None
) -> argparse.ArgumentParser:
    """The server's command line: every option, in one group per section; only the options
    given get a value (``dest`` as in a file: ``listen_port``), ``config_sources`` the
    ``--config-file`` and ``--config-dir`` flags with their values, in order.
    """
    parsed = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [--config-file PATH] [OPTION ...]", description=description, epilog=EPILOG
    )
    if version is not None:
        parsed.add_argument("--version", action="version", version=version)
    parsed.add_argument(
        "--shell_completion", action=_Completion, choices=("bash", "zsh"), help="Print a shell completion script."
    )
    files = parsed.add_argument_group("configuration files")
    sources: dict[str, Any] = {"action": _Source, "dest": "config_sources", "default": []}
    files.add_argument(
        "--config-file",
        metavar="PATH",
        help="A file of options; repeat for several, a later one wins. Default: deepaas_like.conf in "
        "~/.deepaas_like, ~, /etc/deepaas_like or /etc.",
        **sources,
    )
    files.add_argument(
        "--config-dir", metavar="DIR", help="A directory of *.conf files, read in name order.", **sources
    )
    for section in SECTIONS:
        group = parsed.add_argument_group(section.name, section.help)
        for _, option in _in(section):
            _add_argument(group, option.name, argparse.SUPPRESS)
    return parsed


# From the command line and the files to Settings


def read(
    argv: Sequence[str],
    *,
    prog: str | None = None,
    description: str | None = None,
    version: str | None = None,
    default_config_files: list[str] | None = None,
    default_config_dirs: list[str] | None = None,
) -> Settings:
    """The :class:`Settings` that the command line ``argv`` and the configuration files
    describe (the files given, else oslo.config's default ones for ``deepaas_like``).

    Raises ``cfg.Error`` naming the option (and section) whose value is wrong, or the file
    that cannot be read; ``SystemExit`` for ``--help``, ``--version`` and unknown flags.
    """
    given = vars(parser(prog, description, version).parse_args(list(argv)))
    conf = cfg.ConfigOpts()
    for section in SECTIONS:
        opts = [OPTS[option.name] for _, option in _in(section)]
        conf.register_opts(opts, group=cfg.OptGroup(section.name, help=section.help))
        conf.register_opts(opts, group="DEFAULT")  # where DEEPaaS's files have every option
    conf(
        given.pop("config_sources"),
        project=PROJECT,
        prog=prog,
        default_config_files=default_config_files,
        default_config_dirs=default_config_dirs,
    )
    return _settings(conf, given)


def _value(conf: cfg.ConfigOpts, given: dict[str, Any], option: Option) -> Any:
    """The option's value as the field takes it: from the command line, else its section,
    else ``[DEFAULT]``, else its default. Raises ``cfg.Error`` naming where a bad one is."""
    opt = OPTS[option.name]
    where = f"--{option.name}" if opt.dest in given else f"[{option.section}] {option.name}"
    try:
        if opt.dest in given:
            value = [opt.type(v) for v in given[opt.dest]] if opt.multi else opt.type(given[opt.dest])
        elif _set_in(conf, opt, option.section):
            value = conf[option.section][opt.dest]
        else:
            where = f"[DEFAULT] {option.name}"
            value = conf["DEFAULT"][opt.dest]  # not conf[dest]: that is the section for "workers"
    except (cfg.ConfigFileValueError, ValueError) as error:
        raise cfg.Error(f"{where}: {error}") from error
    return _read_value(value, option, option.name)


def _set_in(conf: cfg.ConfigOpts, opt: cfg.Opt, section: str) -> bool:
    """Whether a file (or the environment: ``OS_HTTP__LISTEN_PORT``) sets ``opt`` in ``section``."""
    location = conf.get_location(opt.dest, section)  # None for an unset option without a default
    return location is not None and location.location != cfg.Locations.opt_default


def _settings(conf: cfg.ConfigOpts, given: dict[str, Any]) -> Settings:
    """The per-model options of each model come from its ``[model:NAME]`` section, over those
    of the deprecated ``model-workers`` and ``model-predict-timeout``, over every model's.
    """
    values = {field.name: _value(conf, given, option) for field, option in options(Settings)}
    model = ModelSettings(**{field.name: _value(conf, given, option) for field, option in options(ModelSettings)})
    models = _per_model(values, model)
    known = {"DEFAULT", *(section.name for section in SECTIONS)}
    for section in conf.list_all_sections():
        if section.startswith(MODEL_SECTION):
            name = section[len(MODEL_SECTION) :]
            models[name] = dataclasses.replace(models.get(name, model), **_section(conf, section))
        elif section not in known:
            LOG.warning(
                "[%s] is not a section of this server's options (%s, %sNAME): what it sets is ignored",
                section,
                ", ".join(sorted(known)),
                MODEL_SECTION,
            )
    for where, settings_of_model in [("", model), *((f"[{MODEL_SECTION}{name}] ", m) for name, m in models.items())]:
        problem = settings_of_model.problem()
        if problem:
            raise cfg.Error(where + problem)
    _check(values)
    return Settings(**values, model=model, models=models)


def _per_model(values: dict[str, Any], model: ModelSettings) -> dict[str, ModelSettings]:
    """The models that the deprecated per-model options name, with one warning for each option
    used, saying which ``[model:NAME]`` lines replace it.
    """
    models: dict[str, ModelSettings] = {}
    for (name, field), pairs in zip(
        DEPRECATED_PER_MODEL.items(), (values["model_workers"], values["model_predict_timeouts"]), strict=True
    ):
        if not pairs:
            continue
        lines = "; ".join(f"[{MODEL_SECTION}{model_name}] {field} = {value:g}" for model_name, value in pairs.items())
        LOG.warning(
            "%s is deprecated: set %s in a [%sNAME] section of the configuration file instead (%s)",
            name,
            field,
            MODEL_SECTION,
            lines,
        )
        for model_name, value in pairs.items():
            models[model_name] = dataclasses.replace(models.get(model_name, model), **{field: value})
    return models


def _check(values: dict[str, Any]) -> None:
    """Raises ``cfg.Error`` for values that cannot work together."""
    if values["heartbeat_expiry"] < 2 * values["heartbeat_interval"]:
        raise cfg.Error(
            f"heartbeat-expiry ({values['heartbeat_expiry']:g} s) must be at least twice heartbeat-interval "
            f"({values['heartbeat_interval']:g} s): one late heartbeat must not make an instance count as gone"
        )
    if values["server_processes"] > 1 and values["executor"] == "ray":
        raise cfg.Error(
            "server-processes must be 1 with --executor ray: Ray spreads the replicas, and each process "
            "would place replicas of its own"
        )
    if values["server_processes"] > 1 and in_memory_database(values["database_url"]):
        raise cfg.Error(
            "server-processes must be 1 with a SQLite database in memory: each process would have its own; "
            "use a file (sqlite:///PATH) or PostgreSQL"
        )


def _section(conf: cfg.ConfigOpts, section: str) -> dict[str, Any]:
    """The per-model options that ``[section]`` sets."""
    if section not in conf:
        conf.register_opts(_model_opts(), cfg.OptGroup(section))
    values = {}
    for field, option in options(ModelSettings):
        try:
            value = conf[section][option.name.replace("-", "_")]
        except (cfg.ConfigFileValueError, ValueError) as error:
            raise cfg.Error(f"[{section}] {option.name}: {error}") from error
        if value is not None:
            values[field.name] = _read_value(value, option, f"[{section}] {option.name}")
    return values


def _read_value(value: Any, option: Option, where: str) -> Any:
    try:
        return option.read(value) if option.read else _as_field(value)
    except ValueError as error:
        raise cfg.Error(f"{where}: {error}") from error


def _as_field(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
