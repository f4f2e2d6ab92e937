"""The ODRL 2.2 policy engine: parse -> model -> evaluate (explaining) / compile (hot path)."""

from connector.odrl.evaluate import Report, evaluate
from connector.odrl.model import Policy, Request, Rule, Value, World
from connector.odrl.parse import PolicyError, load_policy, policy_from_graph

__all__ = [
    "Policy",
    "PolicyError",
    "Report",
    "Request",
    "Rule",
    "Value",
    "World",
    "evaluate",
    "load_policy",
    "policy_from_graph",
]
