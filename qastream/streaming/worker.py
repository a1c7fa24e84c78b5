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

from qastream.policy.access import AuthMode, bind_refusal


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
    """A Faust worker whose log level defaults to the app's ``log_level`` (``QASTREAM_LOG_LEVEL``).

    It also refuses to start serving an API without keys to other machines
    (:func:`~qastream.policy.access.bind_refusal`).  The check reads the
    address the web server will bind (``--web-bind`` included), and runs
    here, in the worker only: ``qastream keys create`` must still work on
    such a deployment, to make the keys it needs.
    """

    def __init__(self, *services: ServiceT, loglevel: Union[str, int, None] = None, **kwargs: Any) -> None:
        app = services[0] if services else None
        conf = getattr(app, "conf", None)
        refusal = bind_refusal(str(getattr(conf, "web_bind", "")), getattr(app, "auth_mode", AuthMode.OFF),
                               getattr(app, "allow_anonymous", False)) if conf is not None else None
        if refusal:
            raise click.ClickException(refusal)  # click prints the message and exits 1: no traceback
        setting = getattr(app, "log_level", None)
        level = resolve_loglevel(loglevel, loglevel_given_on_command_line(), setting)
        # Faust's annotation says the first service is an AppT; the CLI passes the app there.
        super().__init__(*services, loglevel=level, **kwargs)  # type: ignore[arg-type]
