"""Measured events in, one typed result out: the summary, traces, pictures, reports."""


def __getattr__(name):
    # mpipipe.measure was one module in 0.1; its names now live in mpipipe.measure.summary.
    if name.startswith("__") or name in ("summary", "trace", "plot", "report"):
        raise AttributeError(name)
    import importlib
    summary = importlib.import_module("mpipipe.measure.summary")
    if hasattr(summary, name):
        import warnings
        warnings.warn(f"mpipipe.measure.{name} moved to mpipipe.measure.summary.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(summary, name)
    raise AttributeError(f"module 'mpipipe.measure' has no attribute {name!r}")
