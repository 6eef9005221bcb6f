"""Per-key budgets and rate limits, exact across workers and replicas (shared state in Redis)."""

from .admission import Quota, Ticket
from .policy import KeyPolicy, RateLimited, cheaper_knob
from .state import MemoryState

__all__ = ["Quota", "Ticket", "KeyPolicy", "RateLimited", "cheaper_knob", "MemoryState"]
