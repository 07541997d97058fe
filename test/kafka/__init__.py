"""Tests of the Kafka source against a real broker (tansu). A package, so that its conftest.py does not shadow
test/conftest.py (both would otherwise be imported as the module ``conftest``)."""
