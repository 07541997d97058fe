"""livereduce: live neutron data reduction daemon.

The data path, one cycle every ``update_every`` seconds::

    listener --extract()--> chunk --proc--> processed --accumulate--> accumulation --post_proc--> output

See ``docs/architecture.md``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("livereduce")
except PackageNotFoundError:  # running from a source checkout without installation
    __version__ = "0+unknown"
