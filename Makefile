# Mobile Video Box: `make demo` runs the box on its embedded default; `make test` installs what the
# tests need and runs them. Both create .venv at the repository root when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lock demo test lint typecheck unit bench bench-uplink bench-backoffice bench-wear bench-wear-box bench-release bench-card bench-reconnect torture soak clean system-deps npm-peers

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3-venv missing: installing it with apt"; \
		apt-get update -qq && apt-get install -y -qq python3-venv python3-pip; \
		$(PYTHON) -m venv $(VENV); }

# Dependencies come from the lock only, every file checked against its SHA-256 (docs/releases.md);
# the project itself is installed editable on top, without resolving anything again.
$(STAMP): $(PY) pyproject.toml requirements/test.lock
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements/test.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The locks, regenerated from pyproject.toml (one lock for every platform the box runs on).
UV_VERSION := 0.13.9
lock: $(PY)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--no-header -q -o requirements/box.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--generate-hashes --no-header -q -o requirements/test.lock

# Debian packages the tests use as real peers: gpsd + gpsfake (GPS), the ffmpeg CLI (pushing
# cameras, the capture benchmark's baseline), gst-rtsp-server through Debian's python3-gi (an RTSP
# camera on loopback; glib-networking is GIO's TLS backend, for the camera serving RTSPS; its
# sound: audiotestsrc, opusenc and RTP payloaders from -base/-good, voaacenc (AAC) from -bad),
# iproute2 + nftables (emulated links in network namespaces: tbf for rate, nftables for loss),
# Chromium (the officer page's browser tests, driven by Playwright with executable_path;
# Playwright's own browser download is never used), systemd (systemd-analyze
# checks the unit files; systemd does not run as PID 1 here), fuse3 (fusermount3 and libfuse 3
# for labdisk, the emulated SD card: mfusepy loads libfuse through ctypes, so no -dev package),
# faketime (steps a real `mvb run`'s wall clock while its monotonic clock stays true: the
# retention clock tests). Installed only when missing, so a prepared machine starts at once.
APT_PACKAGES := gpsd gpsd-clients ffmpeg python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
	gstreamer1.0-plugins-bad iproute2 nftables \
	chromium fonts-dejavu-core systemd fuse3 faketime glib-networking
# npm peers: @tus/server with its file store (the box's tus interop peer). Needs Node >= 20.19.
TUS_NODE := tests/peers/tus_node
system-deps:
	@if ! command -v gpsfake >/dev/null || ! command -v ffmpeg >/dev/null || \
	    ! command -v nft >/dev/null || ! command -v tc >/dev/null || \
	    ! command -v chromium >/dev/null || ! command -v systemd-analyze >/dev/null || \
	    ! command -v fusermount3 >/dev/null || \
	    ! command -v faketime >/dev/null || \
	    ! /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); \
	      gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gio, Gst, GstRtspServer; \
	      Gst.init(None); assert Gst.ElementFactory.find('x264enc'); \
	      assert Gst.ElementFactory.find('voaacenc'); assert Gst.ElementFactory.find('opusenc'); \
	      assert Gio.TlsBackend.get_default().supports_tls()" 2>/dev/null; then \
		echo "installing Debian packages for the tests: $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

demo: $(STAMP)
	$(PY) -m demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

npm-peers: $(TUS_NODE)/node_modules/.package-lock.json

$(TUS_NODE)/node_modules/.package-lock.json: $(TUS_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node >= 20.19) is needed for the @tus/server peer"; exit 1; }
	npm ci --prefix $(TUS_NODE) --no-audit --no-fund --loglevel=error

# The suite spends most of its time waiting (processes, pip, network namespaces, polls with a
# deadline), so two pytest-xdist workers about halve its wall time on two cores. --dist loadfile
# keeps each test file on one worker: its module fixtures (one box, one Chromium, ...) are made
# once. TEST_WORKERS=0 runs it in this process, as before.
TEST_WORKERS ?= 2
unit: $(STAMP) system-deps npm-peers
	$(VENV)/bin/pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck unit

bench: $(STAMP)
	$(PY) -m bench.store

# Power cuts on labdisk (root, fuse3): SIGKILL plus a cut of the emulated card, in strict POSIX and
# ext4-like modes; the recording writer TORTURE_KILLS times per mode, the fleet state (pairing,
# TUF metadata, applied serial) FLEET_TORTURE_KILLS times per mode. docs/soak.md has the figures.
TORTURE_KILLS ?= 500
FLEET_TORTURE_KILLS ?= 100
torture: $(STAMP) system-deps
	nice $(PY) -m bench.torture --kills $(TORTURE_KILLS) --power strict --max-delay-s 2.5
	nice $(PY) -m bench.torture --kills $(TORTURE_KILLS) --power ext4 --max-delay-s 2.5
	nice $(PY) -m bench.torture --scenario fleet --kills $(FLEET_TORTURE_KILLS) --power strict
	nice $(PY) -m bench.torture --scenario fleet --kills $(FLEET_TORTURE_KILLS) --power ext4

bench-uplink: $(STAMP) system-deps  # root: builds network namespaces
	$(PY) -m bench.uplink

bench-release: $(STAMP)  # sizes and times of a release update: build, install, A/B switch
	$(PY) -m bench.release_update
	$(PY) -m bench.release_fetch  # the fleet's part: seal, sign, ngclient fetch, open, install

bench-backoffice: $(STAMP)  # box B's upload time while a paired thief floods the back office
	$(PY) -m bench.backoffice_attack

# Card wear (issue 14 item 5): bytes written to the card per byte of evidence, one 4 Mbit/s
# camera for an hour of footage on labdisk (root: FUSE), old and new card; about a minute.
bench-wear: $(STAMP) system-deps
	nice $(PY) -m bench.wear

# The check on it: the real `mvb run` on labdisk, recording and uploading in real time to the real
# back office, every writer counted; 5 minutes per card, old and new (about 13 minutes).
bench-wear-box: $(STAMP) system-deps
	nice $(PY) -m bench.wear_box

bench-card: $(STAMP)  # root (labdisk): fsync stalls under a recording, ring lag vs awaiting writes
	$(PY) -m bench.card_stall

# Issue 15's "a camera back is recorded again within 2 s": a real RTSP camera killed and restarted
# mid-recording, the time to its first packet in the recording against the bound (~30 s).
bench-reconnect: $(STAMP) system-deps
	$(PY) -m bench.camera_reconnect

# The whole-box soak, long version (docs/soak.md): SOAK_MINUTES of power cuts, WiFi flaps, LTE
# budget and back-office restarts around the real `mvb run`; SOAK_SEED replays a run's script.
# Every power cut is a SIGKILL plus a labdisk cut in SOAK_POWER mode (strict, ext4; none: SIGKILL
# only); run it in both modes.
SOAK_MINUTES ?= 30
SOAK_POWER ?= strict
soak: $(STAMP) system-deps
	nice $(PY) -m tests.soak.run_soak --minutes $(SOAK_MINUTES) --power $(SOAK_POWER) \
		$(if $(SOAK_SEED),--seed $(SOAK_SEED))

clean:
	rm -rf $(VENV) demo-out .mypy_cache .ruff_cache .pytest_cache
