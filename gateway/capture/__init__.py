"""Capture: camera sources, segments, the pre-record ring and the recorder."""
