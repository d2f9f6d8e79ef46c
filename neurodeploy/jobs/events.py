"""How jobs report progress without printing: they call a listener with :class:`Event` objects, and the
CLI (``neurodeploy.cli.render``) turns them into lines and tables. Python callers pass their own
listener or none (:func:`silent`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """kind: "stage" (a step starts or ends: ``message`` says which), "fan_in" (``data``: limit and
    changes of the fan-in pass), "mapping" (``data``: a backend's mapping report), "summary" (``data``:
    the summary, ``message``: its title), "comparison" (``data``: the compare report and the
    summaries), "optimization" (``data``: the optimization report), "done" (``message``: where the
    results are)."""

    kind: str
    message: str = ""
    data: dict = field(default_factory=dict)


Listener = Callable[[Event], None]


def silent(event: Event) -> None:
    """A listener that ignores everything."""
