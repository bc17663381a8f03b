"""The bottom layer, shared by the box and the back office: the fault roots every package's
errors derive from (`faults`) and the durable write (`durable`). Imports nothing of ours."""
