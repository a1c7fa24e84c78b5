"""The worker class Faust's CLI starts for qastream: Faust's own, with ``QASTREAM_LOG_LEVEL`` as its default.

Faust's ``-l/--loglevel`` option has a fixed default (``WARN``) and reads no
environment variable, so ``QASTREAM_LOG_LEVEL`` (:class:`qastream.settings.Settings`)
would reach only the LLM server.  Every command that runs the app, ``qastream
worker`` and ``faust -A qastream.app worker`` alike, builds its worker from
the app's ``Worker`` setting, so this class is where the setting can apply,
and where the command line can still win: a level given with ``-l`` is used
as it is.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import click
import faust
from click.core import ParameterSource
from mode import ServiceT


def resolve_loglevel(cli_level: Union[str, int, None], given_on_command_line: bool,
                     setting: Optional[str]) -> Union[str, int, None]:
    """The level a worker logs at: ``-l`` when given, else the setting, else Faust's default."""
    if given_on_command_line or not setting:
        return cli_level
    return setting.upper()


def loglevel_given_on_command_line() -> bool:
    """Whether the running Faust command (or its group) got ``-l/--loglevel`` on the command line.

    Faust cannot tell: it records the option only when it differs from the
    default, so ``-l warn`` looks like no option at all.  Click keeps where
    each value came from.
    """
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.get_parameter_source("loglevel") is ParameterSource.COMMANDLINE:
            return True
        ctx = ctx.parent
    return False


class QAStreamWorker(faust.Worker):
    """A Faust worker whose log level defaults to the app's ``log_level`` (``QASTREAM_LOG_LEVEL``)."""

    def __init__(self, *services: ServiceT, loglevel: Union[str, int, None] = None, **kwargs: Any) -> None:
        setting = getattr(services[0], "log_level", None) if services else None
        level = resolve_loglevel(loglevel, loglevel_given_on_command_line(), setting)
        # Faust's annotation says the first service is an AppT; the CLI passes the app there.
        super().__init__(*services, loglevel=level, **kwargs)  # type: ignore[arg-type]
