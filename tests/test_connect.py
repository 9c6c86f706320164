"""URI parsing for `emauto.connect`."""

from __future__ import annotations

import pytest

import emauto
from emauto.drivers.sim.uri import sim_config_from_uri
from emauto.errors import ConfigError


def test_defaults() -> None:
    config = sim_config_from_uri("sim://")
    assert config.specimen == "amorphous_carbon"
    assert config.fidelity == "fast"
    assert config.effects.poisson


def test_query_parameters() -> None:
    config = sim_config_from_uri("sim://?specimen=srtio3&fidelity=multislice&seed=7&effects=drift")
    assert (config.specimen, config.fidelity, config.seed) == ("srtio3", "multislice", 7)
    assert config.effects.drift and not config.effects.poisson


def test_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.yaml"
    path.write_text("seed: 3\nbeam_current_A: 5.0e-11\n")
    config = sim_config_from_uri(f"sim://?config={path}&seed=4")
    assert config.seed == 4 and config.beam_current_A == 5e-11


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("sim://?fidelity=slow", "fidelity"),
        ("sim://?seed=-1", "seed"),
        ("sim://?seed=abc", "seed"),
        ("sim://?colour=red", "unknown query parameter"),
        ("sim://?effects=sparkles", "unknown effect"),
        ("sim://somewhere", "query"),
    ],
)
def test_bad_uris(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        sim_config_from_uri(uri)


def test_bad_config_file_names_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.yaml"
    path.write_text("ronchigram:\n  shape: [100, 90]\nbeam_current_A: -1\n")
    with pytest.raises(ConfigError) as info:
        sim_config_from_uri(f"sim://?config={path}")
    assert "beam_current_A" in str(info.value) and "ronchigram" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1", "http://x", 42])
def test_unsupported_schemes(uri: object) -> None:
    with pytest.raises(ConfigError):
        emauto.connect(uri)  # type: ignore[arg-type]


def test_a_replay_of_a_missing_session_says_so(tmp_path: object) -> None:
    from emauto.errors import SessionError

    with pytest.raises(SessionError, match="no such session folder"):
        emauto.connect(f"replay://{tmp_path}/nowhere")
