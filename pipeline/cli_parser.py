"""argparse with the two hints a mistyped command line deserves.

- An unknown option is reported by the (sub)command it was given to, with that command's
  usage, and the closest option it has: ``kontext-batch run m.parquet --quite`` says
  ``usage: kontext-batch run ...`` and ``did you mean --quiet?`` (plain argparse prints the
  top-level usage, which does not even list run's options).
- An unknown command lists every command, including those another entry point dispatches
  (``other_commands``), and the closest one.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

_SELECTED = "_hinting_parser_selected"  # namespace attribute: the innermost parser that ran


def closest(word: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class HintingParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, other_commands: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.other_commands = tuple(other_commands)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        # A subcommand's parser returns first, so the innermost one is recorded.
        if not hasattr(ns, _SELECTED):
            setattr(ns, _SELECTED, self)
        return ns, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        selected: HintingParser = getattr(ns, _SELECTED, self)
        delattr(ns, _SELECTED)
        if extras:
            selected.error(selected.unrecognized(extras))
        return ns

    def unrecognized(self, extras: Sequence[str]) -> str:
        """'unrecognized arguments: ...' plus the closest option for each mistyped one."""
        options = [s for action in self._actions for s in action.option_strings
                   if action.help is not argparse.SUPPRESS and s.startswith("--")]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                near = closest(extra.split("=", 1)[0], options)
                if near:
                    hints.append(f"{extra}: did you mean {near}?")
        text = "unrecognized arguments: " + " ".join(extras)
        return text + ("\n" + "\n".join(hints) if hints else "")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            if value in self.other_commands:
                raise argparse.ArgumentError(
                    action, f"{value!r} is a command of the kontext-batch entry point: run "
                            f"`kontext-batch {value} ...`")
            commands = [*action.choices, *self.other_commands]
            near = closest(str(value), commands)
            hint = f"; did you mean {near!r}?" if near else ""
            raise argparse.ArgumentError(
                action, f"unknown command {value!r} (commands: {', '.join(commands)}){hint}")
        super()._check_value(action, value)
