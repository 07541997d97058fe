"""The scipp engine: Mantid's LoadLiveData/MonitorLiveData semantics on scipp data, for hosts without Mantid.

Data path (one module per step): ``listeners/`` (extract) -> ``chunk.py`` (the NXevent_data chunk) ->
``cycle.py`` (proc, histogram, accumulate, post_proc) with ``accumulate.py`` -> ``engine.py`` (schedule, run
transitions).
"""
