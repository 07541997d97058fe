"""Wire protocols of data sources for which no maintained Python library exists (ADARA, SNS's live stream).

Each protocol package decodes and encodes bytes only: it knows nothing of scipp, chunks or the engine, so the
listener that uses it, the fake server that speaks it and the tests share one implementation.
"""
