"""The demo and the simulators: everything that stands in for hardware, outside the product.

Product packages (common, storage, transport, protocol, config, gateway, backoffice) never import
this package (tests/demo/test_demo_outside_product.py); it may import any of them.

`make demo` (`python -m demo`; the steps are listed in run.py):
- run.py: the command line, the steps in order, the linger;
- narration.py, children.py: what the demo prints and checks; its child processes' output;
- box_config.py: the demo box's identity, timing and configuration file;
- workspace.py: the demo folder, the facts gathered, the real commands run in-process;
- back_office.py (step 1), box_steps.py (2-5), evidence_steps.py (6-9), summary.py (10);
- live_box.py: the real box service on a loop of its own; status.py: its status, read (pure);
- power_cut.py: the writer process SIGKILLed mid-recording; evidence.py: the decrypted footage.

The simulators (used by the demo, the tests and the benchmarks):
- sources.py: the `synthetic` and `replay` camera kinds, plug-ins of the box's camera source
  factory (gateway/capture/sources.py, entry-point group `mvb.camera_sources`);
- synthetic.py, font.py, synthetic_source.py: synthetic H.264 (clips and a live camera) with the
  camera's name and the clock painted in; replay_source.py: a clip replayed as a live camera;
- gps_sim.py: a simulated gpsd driving a route through Hattem.
"""
