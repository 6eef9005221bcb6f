"""tierwise: send each LLM request to the cheapest model that is likely to answer it well."""

__version__ = "0.1.0"

from .table import OutcomeTable, TableError, load_table  # noqa: E402

__all__ = ["OutcomeTable", "TableError", "load_table", "Router", "Pyramid", "__version__"]


def __getattr__(name: str):
    # Lazy: importing tierwise must stay cheap (the gateway's hot path imports only what it uses).
    if name == "Router":
        from .router import Router

        return Router
    if name == "Pyramid":
        from .config import Pyramid

        return Pyramid
    raise AttributeError(name)
