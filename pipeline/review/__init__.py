"""Review decisions (a log keyed by cache key), the local review server, and its commands."""

from .decisions import DECISIONS, Decision, DecisionLog, decisions_path, read_decisions

__all__ = ["DECISIONS", "Decision", "DecisionLog", "decisions_path", "read_decisions"]
