"""A live RTSP "camera" server on GStreamer's RTSP server (gst-rtsp-server), for tests and benchmarks.

Run by Debian's own Python 3 (python3-gi, gir1.2-gst-rtsp-server-1.0), never by the project's virtualenvs;
tests/rtsp/server.py starts and controls it. One process serves one or more mounts described by a JSON file::

    {"address": "127.0.0.1", "port": 8554, "user": null, "password": null, "epoch": 1700000000.0,
     "ready_file": "/tmp/x/ready.json",
     "mounts": [{"path": "/cam1", "clip": "/cache/h264-1920x1080.h264", "codec": "h264", "fps": 15}]}

Each mount behaves like an IP camera whose encoder never stops: loop frame ``i`` of cycle ``c`` of the clip
(pre-encoded access units, see tests/rtsp/clips.py) is due at ``epoch + (c * N + i) / fps`` whether or not a
client watches, so a reader that connects joins wherever the stream is, mid-GOP included. The media is shared
(one pipeline for every client, as a camera's one encoder). A pusher that falls behind (the process was
stopped with SIGSTOP to play a frozen camera, or the machine was busy) does not burst to catch up: it waits
for the next keyframe that is due and goes on from there, so the stream stays decodable, as a camera's would.

With ``user``/``password`` every mount requires HTTP Basic authentication (RTSP 401 otherwise).
The ready file (written once the server listens) holds ``{"pid", "port", "epoch"}``. SIGTERM ends it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

Gst.init(None)

PARSER = {"h264": "h264parse", "h265": "h265parse"}
PAYLOADER = {"h264": "rtph264pay", "h265": "rtph265pay"}
CAPS = {"h264": "video/x-h264", "h265": "video/x-h265"}


def load_access_units(path: str, codec: str) -> List[Any]:
    """Every access unit of an Annex B file, in order, as (bytes, is_keyframe): GStreamer's own parser splits
    them."""
    pipeline = Gst.parse_launch(
        f"filesrc location={path} ! {PARSER[codec]} ! "
        f"{CAPS[codec]},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units = []
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        buffer = sample.get_buffer()
        ok, info = buffer.map(Gst.MapFlags.READ)
        if not ok:
            raise RuntimeError(f"cannot map a buffer of {path}")
        try:
            units.append((bytes(info.data), not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        finally:
            buffer.unmap(info)
    pipeline.set_state(Gst.State.NULL)
    if not units or not units[0][1]:
        raise RuntimeError(f"{path}: no access units, or the first is not a keyframe")
    return units


class Mount:
    """One camera stream: the clip's access units and the schedule they are due on."""

    def __init__(self, spec: Dict[str, Any], epoch: float) -> None:
        self.path = spec["path"]
        self.codec = spec["codec"]
        self.fps = float(spec["fps"])
        self.epoch = epoch
        self.units = load_access_units(spec["clip"], self.codec)
        self.keyframes = [i for i, (_data, key) in enumerate(self.units) if key]

    def due(self, index: int) -> float:
        return self.epoch + index / self.fps

    def live_index(self, now: float) -> int:
        return max(0, int((now - self.epoch) * self.fps))

    def next_keyframe_index(self, at_or_after: int) -> int:
        count = len(self.units)
        cycle, position = divmod(at_or_after, count)
        for key in self.keyframes:
            if key >= position:
                return cycle * count + key
        return (cycle + 1) * count + self.keyframes[0]

    def launch(self) -> str:
        # no parser between appsrc and the payloader: a parser would hold everything back until it has seen
        # the parameter sets of a keyframe, and a camera's encoder never waits for its viewers like that
        return (
            f"( appsrc name=src is-live=true do-timestamp=true format=time "
            f"caps={CAPS[self.codec]},stream-format=byte-stream,alignment=au ! "
            f"{PAYLOADER[self.codec]} name=pay0 pt=96 config-interval=-1 )"
        )


class Pusher(threading.Thread):
    """Pushes a mount's access units into one shared media's appsrc on their schedule until the media goes."""

    def __init__(self, mount: Mount, appsrc: Any) -> None:
        super().__init__(name=f"push{mount.path}", daemon=True)
        self.mount = mount
        self.appsrc = appsrc
        self.stopped = threading.Event()

    def run(self) -> None:
        mount = self.mount
        index = mount.live_index(time.time())  # where the "encoder" is now: mid-GOP, as often as not
        late_limit = 2.0 / mount.fps
        while not self.stopped.is_set():
            wait = mount.due(index) - time.time()
            if wait > 0:
                if self.stopped.wait(wait):
                    return
            elif -wait > late_limit:
                # fell behind (SIGSTOP, a busy machine): resume at the next due keyframe, never a burst
                index = mount.next_keyframe_index(mount.live_index(time.time()) + 1)
                continue
            data, key = mount.units[index % len(mount.units)]
            buffer = Gst.Buffer.new_wrapped(data)
            if not key:
                buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
            if self.appsrc.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
                return  # the media was shut down (flushing) or ended
            index += 1


def main(config_path: str) -> int:
    config = json.loads(open(config_path).read())
    epoch = float(config.get("epoch") or time.time())
    server = GstRtspServer.RTSPServer()
    server.set_address(config.get("address", "127.0.0.1"))
    server.set_service(str(config["port"]))
    user, password = config.get("user"), config.get("password")
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")  # a role name, whatever the user name holds
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password or ""), token)
        server.set_auth(auth)
    pushers: List[Pusher] = []
    for spec in config["mounts"]:
        mount = Mount(spec, epoch)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(mount.launch())
        factory.set_shared(True)
        if user:
            factory.add_role_from_structure(
                Gst.Structure.new_from_string(
                    "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
                )
            )

        def configure(_factory: Any, media: Any, mount: Mount = mount) -> None:
            appsrc = media.get_element().get_child_by_name("src")
            pusher = Pusher(mount, appsrc)
            pushers.append(pusher)
            media.connect("unprepared", lambda _media: pusher.stopped.set())
            pusher.start()

        factory.connect("media-configure", configure)
        server.get_mount_points().add_factory(mount.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {config.get('address')}:{config['port']}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, loop.quit)
    ready = config.get("ready_file")
    if ready:
        partial = ready + ".part"
        with open(partial, "w") as handle:
            json.dump({"pid": os.getpid(), "port": server.get_bound_port(), "epoch": epoch}, handle)
        os.replace(partial, ready)
    loop.run()
    for pusher in pushers:
        pusher.stopped.set()
    return 0


if __name__ == "__main__":
    assert GstApp  # imported for its type registration (appsrc signals)
    sys.exit(main(sys.argv[1]))
