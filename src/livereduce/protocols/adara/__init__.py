"""ADARA, the SNS live data stream served by the Stream Management Service (SMS) on TCP port 31415.

* :mod:`.packets`: packet types, layouts and constants, with citations of the ADARA protocol specification;
* :mod:`.decode`: framing a byte stream into packets and reading each packet type a live client uses;
* :mod:`.encode`: building packets (the client hello; everything a fake SMS sends);
* :mod:`.geometry`: detector ids of the GEOMETRY packet's instrument definition, and a minimal one;
* :mod:`.segments`: what a client holds between hand-overs (pulses, events, monitors, logs);
* :mod:`.client`: the client's conversation (sans-I/O): start, runs, pause, replay, logs.
"""
