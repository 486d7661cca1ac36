"""Hook specifications: how plugins contribute datasets, models, probes, statistics
and metrics.

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names
match the hooks below. Each hook takes no arguments and returns a list of
:class:`~wavelens.Contribution` (a single one is accepted too).

When the hooks are called
    Once per process, when a :class:`~wavelens.host.PluginRegistry` collects
    contributions, after every plugin has been loaded (built-ins from
    ``registry.yaml``, then the ``wavelens.plugins`` entry points, then the files a
    spec names) and after ``check_pending()`` has rejected functions marked
    ``@hookimpl`` that match no hook here. The registry calls each plugin's
    implementation separately so that it can say which plugin contributed what.

A sixth hook, ``wavelens_commands``, adds subcommands to the ``wavelens`` command
line: it returns :class:`~wavelens.Command` objects (see that module). A
seventh, ``wavelens_extension_points``, declares parts of a plugin that other
packages add to (:class:`~wavelens.ExtensionPoint`).

What a contribution's ``build`` must return, per hook
    * ``wavelens_datasets`` → :class:`wavelens.Dataset`
    * ``wavelens_models`` → :class:`wavelens.Model`
    * ``wavelens_probes`` → :class:`wavelens.Probe`
    * ``wavelens_statistics`` → :class:`wavelens.Statistic`
    * ``wavelens_metrics`` → :class:`wavelens.Metric`

Example::

    from wavelens import Contribution, Params, hookimpl

    class ToneParams(Params):
        n_examples: int = 100

    @hookimpl
    def wavelens_datasets():
        return [Contribution("my_tones", ToneParams, "Pure tones", build=MyTones)]
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from ._commands import Command
from ._contributions import Contribution
from ._extensions import ExtensionPoint

PROJECT = "wavelens"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Maps each kind of contribution to the hook that collects it.
HOOK_FOR_KIND = {
    "dataset": "wavelens_datasets",
    "model": "wavelens_models",
    "probe": "wavelens_probes",
    "statistic": "wavelens_statistics",
    "metric": "wavelens_metrics",
}


@hookspec
def wavelens_datasets() -> Sequence[Contribution] | Contribution:
    """Contribute dataset plugins.

    Called once when contributions are collected. Returns the plugin's dataset
    contributions; each ``build(params)`` returns a :class:`wavelens.Dataset`
    that prepares data into its stage directory and loads it back as named splits
    (``train``, ``test``, ...).
    """


@hookspec
def wavelens_models() -> Sequence[Contribution] | Contribution:
    """Contribute model plugins.

    Called once when contributions are collected. Returns the plugin's model
    contributions; each ``build(params)`` returns a :class:`wavelens.Model`
    that creates the ``torch.nn.Module``, trains it (optionally) and maps a batch to
    ``(preds, target)`` for metrics.
    """


@hookspec
def wavelens_probes() -> Sequence[Contribution] | Contribution:
    """Contribute probe plugins.

    Called once when contributions are collected. Returns the plugin's probe
    contributions; each ``build(params)`` returns a :class:`wavelens.Probe`
    that runs the trained (or loaded) network on a data split and writes its
    measurements (a tidy table) into its stage directory.
    """


@hookspec
def wavelens_statistics() -> Sequence[Contribution] | Contribution:
    """Contribute statistic plugins.

    Called once when contributions are collected. Returns the plugin's statistic
    contributions; each ``build(params)`` returns a
    :class:`wavelens.Statistic` that reads the probes' tables and writes
    fitted results into its stage directory.
    """


@hookspec
def wavelens_metrics() -> Sequence[Contribution] | Contribution:
    """Contribute metric plugins.

    Called once when contributions are collected. Returns the plugin's metric
    contributions; each ``build(params)`` returns a :class:`wavelens.Metric`
    (``update(preds, target)`` per batch, ``compute()`` at the end).
    """


@hookspec
def wavelens_commands() -> Sequence[Command] | Command:
    """Contribute subcommands of ``wavelens`` (:class:`~wavelens.Command`).

    Each command's name is unique among the loaded plugins' commands and is not one
    of the core's (``plugins``, ``validate``, ``run``, ``data``, ``probe``,
    ``stats``, ``report``). ``wavelens --help`` lists them, and ``wavelens plugins``
    shows which plugin each comes from.
    """


@hookspec
def wavelens_extension_points() -> Sequence[ExtensionPoint] | ExtensionPoint:
    """Declare parts of the plugin that other packages add to
    (:class:`~wavelens.ExtensionPoint`: a name, the entry-point group they
    register under, the built-in entries).

    Each point's name is unique among the loaded plugins' points. ``wavelens plugins``
    lists every point and what is registered at it.
    """
