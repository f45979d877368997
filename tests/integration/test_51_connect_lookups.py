#!/usr/bin/env python3
"""What a CONNECT reads from Redis (issue 10): the device's claim script
also counts its unfinished commands, so a device with none connects
without the command store's own look-up, and one with commands waiting
still gets them.

One real Redis and three nodes n1..n3, set up as test_50_commands does
(with commands_harness.py's helpers).

  connect_with_nothing_pending_skips_the_command_lookup
      a device with no commands connects: its node counts a skipped
      look-up and no look-up; a command posted afterwards still reaches it
      and succeeds.
  queued_command_makes_the_connect_look_it_up
      a command queued while the device is away: the node it connects to
      looks the commands up (counted) and delivers it; nothing is skipped.
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import commands_harness as cmh  # noqa: E402

cases, case = ch.case_list()


def pickups(node):
    """(look-ups, skipped look-ups) on node."""
    return (cmh.commands_counter([node], "pickups"),
            cmh.commands_counter([node], "pickups_skipped"))


@case
def connect_with_nothing_pending_skips_the_command_lookup():
    n1 = cmh.CL.nodes[0]
    dev = cmh.Device()
    try:
        before = pickups(n1)
        dev.connect(n1)
        # The counters move before CONNACK; the registry wait in connect()
        # has already seen the claim.
        after = pickups(n1)
        h.check_eq((after[0] - before[0], after[1] - before[1]), (0, 1),
                   "(look-ups, skipped) on n1 for a device with no commands")
        cmd = cmh.post_command(cmh.CL.nodes[2], dev.id, {"op": "now"})
        cmh.check_copy(dev.wait_copies(1)[0], cmd, "a command posted after the connect")
        done = cmh.wait_final(n1, cmd["id"])
        h.check_eq(done["status"], "succeeded", "its status")
        return "skipped 1, looked up 0"
    finally:
        cmh.stop_devices(dev)


@case
def queued_command_makes_the_connect_look_it_up():
    n1, n2, n3 = cmh.CL.nodes
    dev = cmh.Device()
    try:
        cmd = cmh.post_command(n3, dev.id, {"op": "later"})
        h.check_eq(cmd["status"], "queued", "a command for an offline device")
        before = pickups(n2)
        dev.connect(n2)
        cmh.check_copy(dev.wait_copies(1)[0], cmd, "the queued command on connect")
        after = pickups(n2)
        h.check_eq((after[0] - before[0], after[1] - before[1]), (1, 0),
                   "(look-ups, skipped) on n2 for a device with a queued command")
        done = cmh.wait_final(n1, cmd["id"])
        h.check_eq((done["status"], done["node"]), ("succeeded", "n2"), "(status, node)")
        return "looked up 1, skipped 0"
    finally:
        cmh.stop_devices(dev)


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", cmh.stop_all), cmh.bind,
                        **cmh.NODE_OPTIONS)


if __name__ == "__main__":
    sys.exit(main())
