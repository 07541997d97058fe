"""Mantid processing script for upstream's manual check (test/fake_event.conf, FakeISISEventDAE)."""

print("Running proc script")
