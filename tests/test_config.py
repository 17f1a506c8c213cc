"""Config layers and mode precedence exactly as DESIGN.md "Modes and configuration" says.

Layers, later wins: defaults < .orc/shared/config.yaml < $ORC_HOME/config.yaml <
.orc/local/config.yaml < environment.  Mode: ORC_MODE > ``mode:`` in config > team when a server
URL is configured > p2p when .orc/shared/ exists > solo; the reason names where it came from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import orc, orc_json

from orc_git.config import (
    DEFAULT_HEARTBEAT,
    DEFAULT_TTL,
    MAX_CONFIG_BYTES,
    Config,
    load_config,
)
from orc_git.errors import ConfigError
from orc_git.home import orc_home
from orc_git.repo import find_repo


class Layers:
    """The three config files of one repository (and the isolated ORC_HOME)."""

    def __init__(self, repo: Path, home: Path) -> None:
        self.repo = repo
        self.shared = repo / ".orc" / "shared" / "config.yaml"
        self.home = home / "config.yaml"
        self.local = repo / ".orc" / "local" / "config.yaml"
        for path in (self.shared, self.home, self.local):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")  # empty: no layer at all until a test writes one

    def load(self) -> Config:
        return load_config(find_repo(self.repo))


@pytest.fixture
def layers(repo: Path, isolated_env: Path) -> Layers:
    return Layers(repo, isolated_env)


# -- values ---------------------------------------------------------------------------------


def test_defaults_when_no_file_says_anything(layers: Layers) -> None:
    config = layers.load()
    assert config.ttl == DEFAULT_TTL == 60
    assert config.heartbeat == DEFAULT_HEARTBEAT == 10.0
    assert config.sources["lock.ttl"] == "defaults"
    assert config.sources["lock.heartbeat"] == "defaults"


def test_each_layer_overrides_the_one_before(layers: Layers) -> None:
    layers.shared.write_text("lock: {ttl: 11}\n")
    config = layers.load()
    assert (config.ttl, config.sources["lock.ttl"]) == (11, str(layers.shared))

    layers.home.write_text("lock: {ttl: 22}\n")
    config = layers.load()
    assert (config.ttl, config.sources["lock.ttl"]) == (22, str(layers.home))

    layers.local.write_text("lock: {ttl: 33}\n")
    config = layers.load()
    assert (config.ttl, config.sources["lock.ttl"]) == (33, str(layers.local))


def test_layers_merge_key_by_key(layers: Layers) -> None:
    layers.shared.write_text("lock: {ttl: 30, heartbeat: 5}\nteam: {project: acme}\n")
    layers.home.write_text("identity: {user: carol}\n")
    layers.local.write_text("lock: {ttl: 45}\n")
    config = layers.load()
    assert config.ttl == 45 and config.sources["lock.ttl"] == str(layers.local)
    assert config.heartbeat == 5.0 and config.sources["lock.heartbeat"] == str(layers.shared)
    assert config.get("team.project") == "acme"
    assert config.get("identity.user") == "carol"
    assert config.sources["identity.user"] == str(layers.home)


def test_environment_is_the_last_layer(layers: Layers, monkeypatch: pytest.MonkeyPatch) -> None:
    layers.local.write_text("team: {server_url: ws://from-local:1, token: local-token}\n")
    monkeypatch.setenv("ORC_TEAM_URL", "ws://from-env:2")
    monkeypatch.setenv("ORC_TEAM_TOKEN", "env-token")
    config = layers.load()
    assert config.get("team.server_url") == "ws://from-env:2"
    assert config.get("team.token") == "env-token"
    assert config.sources["team.server_url"] == "the environment"


def test_empty_environment_variables_are_ignored(layers: Layers,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    layers.local.write_text("mode: p2p\nteam: {server_url: ws://from-local:1}\n")
    monkeypatch.setenv("ORC_MODE", "")
    monkeypatch.setenv("ORC_TEAM_URL", "")
    config = layers.load()
    assert config.resolve_mode()[0] == "p2p"
    assert config.get("team.server_url") == "ws://from-local:1"


def test_orc_home_replaces_the_home_directory(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("ORC_HOME", str(tmp_path / "elsewhere"))
    assert orc_home() == tmp_path / "elsewhere"
    monkeypatch.delenv("ORC_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert orc_home() == tmp_path / "me" / ".orc"


def test_home_layer_applies_outside_any_repository(isolated_env: Path) -> None:
    (isolated_env / "config.yaml").write_text("lock: {ttl: 9}\n")
    config = load_config(None)
    assert config.ttl == 9
    assert config.resolve_mode()[0] == "solo"


@pytest.mark.parametrize(("text", "what"), [
    ("lock: {ttl: 0}", "lock.ttl"), ("lock: {ttl: -5}", "lock.ttl"),
    ("lock: {ttl: 86401}", "lock.ttl"), ("lock: {ttl: 1.5}", "lock.ttl"),
    ("lock: {ttl: '60'}", "lock.ttl"), ("lock: {ttl: true}", "lock.ttl"),
    ("lock: {heartbeat: 0}", "lock.heartbeat"), ("lock: {heartbeat: -1}", "lock.heartbeat"),
    ("lock: {heartbeat: fast}", "lock.heartbeat"), ("lock: {heartbeat: .nan}", "lock.heartbeat"),
])
def test_bad_lock_values_name_their_source(layers: Layers, text: str, what: str) -> None:
    layers.home.write_text(text + "\n")
    config = layers.load()
    with pytest.raises(ConfigError) as err:
        _ = config.ttl if what == "lock.ttl" else config.heartbeat
    assert what in err.value.message
    assert str(layers.home) in err.value.message


def test_config_larger_than_the_limit_is_refused(layers: Layers) -> None:
    layers.local.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as err:
        layers.load()
    assert str(layers.local) in err.value.message


# -- mode precedence ------------------------------------------------------------------------


def test_orc_mode_environment_beats_everything(layers: Layers,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    layers.shared.write_text("mode: p2p\n")
    layers.local.write_text("mode: team\nteam: {server_url: ws://x:1}\n")
    monkeypatch.setenv("ORC_MODE", "solo")
    mode, why = layers.load().resolve_mode()
    assert mode == "solo"
    assert "the environment" in why


def test_mode_in_config_beats_a_team_server_url(layers: Layers) -> None:
    layers.shared.write_text("team: {server_url: ws://x:1}\n")
    layers.local.write_text("mode: p2p\n")
    mode, why = layers.load().resolve_mode()
    assert mode == "p2p"
    assert str(layers.local) in why


@pytest.mark.parametrize("holder", ["shared", "home", "local"])
def test_mode_follows_the_config_layers(layers: Layers, holder: str) -> None:
    order = ["shared", "home", "local"]
    modes = {"shared": "solo", "home": "team", "local": "p2p"}
    for name in order[: order.index(holder) + 1]:
        getattr(layers, name).write_text(f"mode: {modes[name]}\n")
    mode, why = layers.load().resolve_mode()
    assert mode == modes[holder]
    assert str(getattr(layers, holder)) in why


def test_team_server_url_means_team(layers: Layers) -> None:
    layers.home.write_text("team: {server_url: ws://127.0.0.1:8765}\n")
    mode, why = layers.load().resolve_mode()
    assert mode == "team"
    assert str(layers.home) in why


def test_team_server_url_from_the_environment(layers: Layers,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORC_TEAM_URL", "ws://127.0.0.1:8765")
    mode, why = layers.load().resolve_mode()
    assert mode == "team"
    assert "the environment" in why


def test_shared_directory_means_p2p(layers: Layers) -> None:
    layers.shared.unlink()  # the directory alone is enough
    mode, why = layers.load().resolve_mode()
    assert mode == "p2p"
    assert str(layers.shared.parent) in why


def test_nothing_means_solo(solo_repo: Path) -> None:
    config = load_config(find_repo(solo_repo))
    mode, why = config.resolve_mode()
    assert mode == "solo"
    assert ".orc/shared" in why


def test_a_file_where_the_shared_directory_belongs_is_a_clear_error(solo_repo: Path) -> None:
    (solo_repo / ".orc").mkdir()
    (solo_repo / ".orc" / "shared").write_text("")
    code, out = orc_json("mode", cwd=solo_repo)
    assert code == 3
    assert out["error"]["code"] == "CONFIG_ERROR"
    assert str(solo_repo / ".orc" / "shared") in out["error"]["message"]


@pytest.mark.parametrize("source", ["env", "file"])
def test_unknown_mode_is_a_config_error_naming_its_source(
        layers: Layers, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    if source == "env":
        monkeypatch.setenv("ORC_MODE", "turbo")
    else:
        layers.local.write_text("mode: turbo\n")
    with pytest.raises(ConfigError) as err:
        layers.load().resolve_mode()
    assert "turbo" in err.value.message
    where = "the environment" if source == "env" else str(layers.local)
    assert where in err.value.message


# -- `orc mode` -----------------------------------------------------------------------------


def test_orc_mode_prints_the_mode_on_stdout_and_why_on_stderr(repo: Path) -> None:
    proc = orc("mode", cwd=repo)
    assert proc.returncode == 0
    assert proc.stdout == "p2p\n"
    assert str(repo / ".orc" / "shared" / "config.yaml") in proc.stderr


def test_orc_mode_in_a_solo_repository(solo_repo: Path) -> None:
    proc = orc("mode", cwd=solo_repo)
    assert proc.returncode == 0
    assert proc.stdout == "solo\n"
    assert not (solo_repo / ".orc").exists()


def test_orc_mode_with_the_environment(repo: Path) -> None:
    proc = orc("mode", cwd=repo, env={"ORC_MODE": "solo"})
    assert proc.returncode == 0
    assert proc.stdout == "solo\n"
    assert "the environment" in proc.stderr


def test_orc_mode_json(repo: Path) -> None:
    code, out = orc_json("mode", cwd=repo)
    assert code == 0
    assert out["schema"] == 1
    assert out["mode"] == "p2p"
    assert str(repo / ".orc" / "shared" / "config.yaml") in out["reason"]


def test_orc_mode_from_a_subdirectory_uses_the_repository_config(repo: Path) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    (repo / ".orc" / "local" / "config.yaml").write_text("mode: solo\n")
    proc = orc("mode", cwd=sub)
    assert proc.stdout == "solo\n"
    assert str(repo / ".orc" / "local" / "config.yaml") in proc.stderr


def test_orc_mode_with_an_unknown_mode_fails_cleanly(repo: Path) -> None:
    code, out = orc_json("mode", cwd=repo, env={"ORC_MODE": "turbo"})
    assert code == 3
    assert out["error"]["code"] == "CONFIG_ERROR"
    assert "turbo" in out["error"]["message"]


# -- config files that cannot be used ------------------------------------------------------

BAD_CONFIGS = {
    "unclosed": "lock: [unclosed\n",
    "a-list": "- mode\n- p2p\n",
    "negative-ttl": "mode: p2p\nlock: {ttl: -5}\n",
    "bad-date": "mode: p2p\ncreated: 2024-02-30\n",
    "bad-int-tag": "mode: p2p\nlock: {ttl: !!int sixty}\n",
    "python-tag": "mode: p2p\nx: !!python/object/apply:os.system [\"touch {marker}\"]\n",
    "not-utf8": "mode: p2p\nidentity: {user: b\xf6b}\n",
    "unknown-mode": "mode: turbo\n",
}


# every case in the committed config; the other two layers with a sample (same reader)
CONFIG_MATRIX = [(case, "shared") for case in BAD_CONFIGS] + [
    (case, where) for where in ("home", "local") for case in ("unclosed", "negative-ttl")]


@pytest.mark.parametrize(("case", "where"), CONFIG_MATRIX)
def test_bad_config_is_a_config_error_naming_the_file(repo: Path, isolated_env: Path,
                                                      tmp_path: Path, case: str,
                                                      where: str) -> None:
    path = {"shared": repo / ".orc" / "shared" / "config.yaml",
            "home": isolated_env / "config.yaml",
            "local": repo / ".orc" / "local" / "config.yaml"}[where]
    marker = tmp_path / "pwned"
    text = BAD_CONFIGS[case].replace("{marker}", str(marker))
    path.write_bytes(text.encode("latin-1") if case == "not-utf8" else text.encode())

    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 3, out
    assert out["error"]["code"] == "CONFIG_ERROR"
    assert str(path) in out["error"]["message"]
    assert not marker.exists()


def test_bad_config_without_json_is_one_line_on_stderr(repo: Path) -> None:
    path = repo / ".orc" / "shared" / "config.yaml"
    path.write_text("lock: [unclosed\n")
    proc = orc("lock", "status", "T", cwd=repo)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr
    assert "not valid YAML" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_config_that_is_a_directory(repo: Path) -> None:
    path = repo / ".orc" / "local" / "config.yaml"
    path.mkdir(parents=True)
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 3
    assert out["error"]["code"] == "CONFIG_ERROR"
    assert str(path) in out["error"]["message"]
