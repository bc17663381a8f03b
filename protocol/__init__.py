"""What the box and the back office share on the wire: the pairing code, the pairing messages and
the signed fleet report (docs/pairing.md, docs/fleet-config.md).

Both sides import from here; the box never imports the back office's package. Nothing here does
I/O or reads a clock.
"""
