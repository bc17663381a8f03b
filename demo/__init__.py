"""The demo and the simulators: everything that stands in for hardware, outside the product.

Product packages (common, storage, transport, protocol, config, gateway, backoffice) never import
this package (tests/demo/test_demo_outside_product.py); it may import any of them. The box runs
its cameras through plug-ins (demo/sources.py, the entry-point group of
gateway/capture/sources.py).
"""
