"""livereduce: live neutron data reduction daemon.

The data path, one cycle every ``update_every`` seconds::

    listener --extract()--> chunk --proc--> processed --accumulate--> accumulation --post_proc--> output

See ``docs/architecture.md``. Importing the package imports nothing else (the entry point installs its signal
handlers first); ``__version__`` is looked up when first used.
"""


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - lazily, see above

        try:
            return version("livereduce")
        except PackageNotFoundError:  # running from a source checkout without installation
            return "0+unknown"
    raise AttributeError(f"module 'livereduce' has no attribute '{name}'")
