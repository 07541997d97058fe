"""Mantid post-processing script (test/postprocessing/fake.conf): the accumulation is ``input`` (its name is
unique per start, so upstream's ``RenameWorkspace("accumulation", "result")`` no longer works)."""

from mantid.simpleapi import CloneWorkspace

CloneWorkspace(InputWorkspace=input, OutputWorkspace=output)
