"""Test double of ``mantid.utils`` (only ``mantid.utils.logging``)."""
