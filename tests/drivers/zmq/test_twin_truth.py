"""The twin's ground truth over the wire, now and once its lenses have settled: the same
figures as in process, so that episodes over `tcp://` are scored on the state they leave
(before, a frameless last move was scored while the lenses still lagged behind it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.drivers.zmq.client import RemoteTwin, connect_remote
from emauto.errors import InvalidRequestError, ProtocolError
from emauto.microscope import SettlingGroundTruth
from emauto.units import load_yaml


def test_settled_truth_over_the_wire_equals_the_twins(
    thread_server: Any, sim_config_file: Path
) -> None:
    twin = SimulatedMicroscope(load_yaml(sim_config_file, SimConfig))
    server = thread_server(twin)
    remote = connect_remote(server.endpoint)
    try:
        assert isinstance(remote, RemoteTwin) and isinstance(remote, SettlingGroundTruth)
        knobs = remote.read().knobs
        remote.set({"C10": knobs["C10"] + 40e-9})  # a frameless move: the lenses lag
        now, settled = remote.strehl_ratio(), remote.strehl_ratio_after(1.0)
        assert now == pytest.approx(twin.strehl_ratio())
        assert settled == pytest.approx(twin.strehl_ratio_after(1.0))
        assert settled != pytest.approx(now)  # lens lag: the truth a second on differs
        remote_c10, twin_c10 = remote.aberrations_after(1.0).C10, twin.aberrations_after(1.0).C10
        assert remote_c10 == pytest.approx(twin_c10)
        for bad in (-1.0, 1e6):
            with pytest.raises((InvalidRequestError, ProtocolError)):
                remote.twin_truth(bad)
    finally:
        remote.close(safe=False)
