"""The hardening probe of tests/system/test_agent_unit.py again, in the QEMU box, for what a container cannot show:
there nspawn mounts /proc/sys read-only for everything and gives no /dev/kmsg, so ProtectKernelTunables= is
only seen in force on a machine of its own (ProtectKernelLogs='s /dev/kmsg is refused to the agent's user
outside the unit too, by Debian's dmesg_restrict: checked refused, not credited)."""

from __future__ import annotations

import json

from tests.system.conftest import REPO, SRC
from tests.system.test_agent_unit import HARDENED, PROBE_DROP_IN
from tests.system.vm import VM

PROBE = f"{SRC}/tests/system/probe_unit.py"


def test_kernel_tunables_and_logs_are_protected_on_a_machine_of_its_own(box_vm: VM) -> None:
    box = box_vm
    # the probe is not on the VM's disk (no checkout there): it goes where the drop-in looks for it
    probe = (REPO / "tests" / "system" / "probe_unit.py").read_text()
    box.sh(f"mkdir -p {SRC}/tests/system && cat > {PROBE} <<'EOF'\n{probe}EOF")
    box.sh(
        f"mkdir -p /etc/systemd/system/edge-agent.service.d && cat > "
        f"/etc/systemd/system/edge-agent.service.d/probe.conf <<'EOF'\n{PROBE_DROP_IN}EOF"
    )
    box.sh(
        "rm -f /var/lib/edge-agent/probe.json && systemctl daemon-reload && systemctl restart edge-agent", timeout=300
    )
    box.wait_for("test -s /var/lib/edge-agent/probe.json", 120, "the probe's results")
    inside = json.loads(box.sh("cat /var/lib/edge-agent/probe.json").stdout)
    box.sh(
        f"setpriv --reuid=edge-agent --regid=edge-agent --init-groups /opt/edge-agent/venv/bin/python {PROBE} "
        "/tmp/probe-outside.json"
    )
    outside = json.loads(box.sh("cat /tmp/probe-outside.json").stdout)
    # what the container could not show: here the same user outside the unit sees them otherwise
    assert inside["ro-mount /proc/sys"] == "ok:True" and outside["ro-mount /proc/sys"] == "ok:False"
    # /dev/kmsg refused inside (ProtectKernelLogs= and the device policy); outside, a user without CAP_SYSLOG is
    # refused too (Debian's dmesg_restrict), so this one shows the unit's part only where the errno differs
    assert inside["open /dev/kmsg"] in ("ENOENT", "EACCES", "EPERM"), inside["open /dev/kmsg"]
    # and the rest holds on a real kernel as in the container
    wrong = {name: (inside.get(name), want) for name, (want, _why) in HARDENED.items() if inside.get(name) != want}
    assert not wrong, wrong
