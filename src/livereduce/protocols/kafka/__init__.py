"""The Kafka side of live data: ESS streaming schemas and topic conventions, independent of any engine.

* :mod:`.topics`: topic names by role (Mantid's ``<INSTRUMENT>_events`` ...) and librdkafka client settings,
  with secrets redacted for logging;
* :mod:`.schemas`: decoding a message by its FlatBuffers file identifier with ``ess-streaming-data-types``
  (``ev44``, ``ev42``, ``pl72``, ``6s4t``, ``f144``, ``f142``), validated, into plain records; everything else
  is a :class:`~.schemas.Skipped` with a reason from a fixed vocabulary;
* :mod:`.f142`: keeps ``ess-streaming-data-types`` 0.27.0's f142 working under NumPy 2;
* :mod:`.times`: unit conversions (ns, ms, µs) of the schemas' times;
* :mod:`.runs`, :mod:`.partitions`, :mod:`.reading`: what a consumer read, without I/O: runs and their data
  (``RunRouter``), each partition's offsets and their verification after a lost connection (``Partitions``), and
  the two joined per message (``ReadState``).

Schemas: ess-dmsc/streaming-data-types ``schemas/*.fbs``; Python API: PyPI ``ess-streaming-data-types``.
"""
