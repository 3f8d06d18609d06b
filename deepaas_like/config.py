"""The command-line and file options (oslo.config), made from the option table in
:class:`deepaas_like.settings.Settings`, and the Settings they describe.

Option names and defaults follow DEEPaaS 2.6 where it has the option.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from oslo_config import cfg

from deepaas_like.settings import (
    AUTH_ENV,
    MODEL_ENV,
    ModelSettings,
    Option,
    Settings,
    default_database_url,
    in_memory_database,
    model_names,
    options,
)

__all__ = [
    "ALL_OPTS",
    "MODEL_OPTS",
    "MODEL_SECTION",
    "AUTH_ENV",
    "EPILOG",
    "MODEL_ENV",
    "model_names",
    "register",
    "settings",
]


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


#: Every option, in the DEFAULT group (and on the command line).
ALL_OPTS: list[cfg.Opt] = [_opt(field) for field, _ in options()]
#: A model's section, ``[model:NAME]``: the per-model options, unset unless the section sets them.
MODEL_SECTION = "model:"
MODEL_OPTS: list[cfg.Opt] = [
    _opt(field, default=None, sample_default="<the DEFAULT value>") for field, _ in options(ModelSettings)
]

EPILOG = (
    "Every option can also be set in a file given with --config-file (see etc/deepaas_like.conf.sample). "
    "Trainings and asynchronous predictions are kept in the job database (--database-url; default: "
    f"{default_database_url()})."
)


def register(conf: cfg.ConfigOpts, show_defaults: bool = False) -> None:
    """Register every option as a command-line option of ``conf`` (DEFAULT group);
    ``show_defaults`` adds each option's default to its ``--help`` text.
    """
    conf.register_cli_opts([_with_default(opt) for opt in ALL_OPTS] if show_defaults else ALL_OPTS)


def _with_default(opt: cfg.Opt) -> cfg.Opt:
    default = opt.default
    if default in (None, "", [], {}) or isinstance(opt, cfg.BoolOpt):
        shown = {True: "on", False: "off"}.get(default) if isinstance(opt, cfg.BoolOpt) else None
    else:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
    if shown is None:
        return opt
    described = copy.deepcopy(opt)
    described.help = f"{opt.help} Default: {shown}."
    return described


def settings(conf: cfg.ConfigOpts) -> Settings:
    """The :class:`Settings` the parsed configuration describes: the DEFAULT group, then the
    per-model options, from ``model-workers``/``model-predict-timeout`` and, over those, from
    each ``[model:NAME]`` section of the configuration files.

    Raises ``cfg.Error`` naming the option (and section) whose value is wrong.
    """
    values = {field.name: _read(conf, field, option) for field, option in options(Settings)}
    model = ModelSettings(**{field.name: _read(conf, field, option) for field, option in options(ModelSettings)})
    models = {name: dataclasses.replace(model, workers=count) for name, count in values["model_workers"].items()}
    for name, seconds in values["model_predict_timeouts"].items():
        models[name] = dataclasses.replace(models.get(name, model), predict_timeout=seconds)
    for section in conf.list_all_sections():
        if section.startswith(MODEL_SECTION):
            name = section[len(MODEL_SECTION) :]
            models[name] = dataclasses.replace(models.get(name, model), **_section(conf, section))
    for where, settings_of_model in [("", model), *((f"[{MODEL_SECTION}{name}] ", m) for name, m in models.items())]:
        problem = settings_of_model.problem()
        if problem:
            raise cfg.Error(where + problem)
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
    return Settings(**values, model=model, models=models)


def _section(conf: cfg.ConfigOpts, section: str) -> dict[str, Any]:
    """The per-model options that ``[section]`` sets."""
    group = cfg.OptGroup(section)
    if section not in conf:
        conf.register_opts(MODEL_OPTS, group)
    values = {}
    for field, option in options(ModelSettings):
        try:
            value = conf[section][option.name.replace("-", "_")]
        except (cfg.ConfigFileValueError, ValueError) as error:
            raise cfg.Error(f"[{section}] {option.name}: {error}") from error
        if value is not None:
            values[field.name] = _read_value(value, option, f"[{section}] {option.name}")
    return values


def _read(conf: cfg.ConfigOpts, field: dataclasses.Field[Any], option: Option) -> Any:
    return _read_value(conf[option.name.replace("-", "_")], option, option.name)


def _read_value(value: Any, option: Option, where: str) -> Any:
    try:
        return option.read(value) if option.read else _as_field(value)
    except ValueError as error:
        raise cfg.Error(f"{where}: {error}") from error


def _as_field(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
