"""Mantid processing script for upstream's manual check (test/fake.conf, FakeISISHistoDAE)."""

from mantid.simpleapi import Rebin, SumSpectra

SumSpectra(InputWorkspace=input, OutputWorkspace=output)
Rebin(InputWorkspace=output, OutputWorkspace=output, Params="300,20,17000")
