"""Per-key budgets and rate limits, exact across workers and replicas (shared state in Redis)."""

from .admission import Quota, Ticket
from .policy import KeyPolicy, QuotaUnavailable, RateLimited, TooLargeForLimit, cheaper_knob
from .state import MemoryState

__all__ = ["Quota", "Ticket", "KeyPolicy", "QuotaUnavailable", "RateLimited", "TooLargeForLimit", "cheaper_knob",
           "MemoryState"]
