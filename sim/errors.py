"""User-facing errors: they name the file, the field, what was given and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field


class UserError(Exception):
    """An error whose message tells the user what went wrong and what to do: the CLI prints it
    and exits 2, without a traceback."""


@dataclass
class Problem:
    """One thing wrong with an input, addressed by its dotted field path."""

    field: str
    given: object
    allowed: str

    def render(self) -> str:
        given = repr(self.given)
        if len(given) > 80:
            given = given[:77] + "..."
        return f"  {self.field or '<top level>'}: {self.allowed} (given: {given})"


@dataclass
class ScenarioError(UserError):
    """A scenario (or an override, or a referenced manifest) that cannot be used as given."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.source}: invalid scenario"]
        lines += [p.render() for p in self.problems]
        return "\n".join(lines)
