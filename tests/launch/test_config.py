"""Launch files checked before anything starts: the schema, defaults, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from easymesh.launch import ConfigError, load_config, make_plan, parse_config
from easymesh.launch.plan import node_argv
from tests.launch.conftest import fake

FULL = """\
coordinator:
  host: ""
  client_host: robot1.lab
  port: 7400
  authkey: my-secret
  log_heartbeats: true
  disabled: false
  on_host: robot1
  post_delay: 1.0
nodes:
  camera:
    command: [python, -m, camera_node, --fps, 30]
    shell: false
    disabled: false
    on_host: [robot1, robot2]
    number: 2
    pre_delay: 0.5
    post_delay: 0.25
    respawn: true
    respawn_delay: 3
    env: {CAMERA: front, GAIN: 1.5, DROP: null}
    cwd: ~/robot
  logger:
    command: python log.py | tee log.txt
    required: true
"""


def test_every_key_of_the_issue_schema_is_read():
    config = parse_config(FULL, source="full.yaml", base_dir="/base")
    c = config.coordinator
    assert (c.host, c.client_host, c.port, c.authkey) == ("", "robot1.lab", 7400, "my-secret")
    assert (c.log_heartbeats, c.disabled, c.on_host, c.post_delay) == (
        True,
        False,
        ("robot1",),
        1.0,
    )
    cam = config.node("camera")
    assert cam.command == ("python", "-m", "camera_node", "--fps", "30")
    assert (cam.shell, cam.disabled, cam.on_host, cam.number) == (
        False,
        False,
        ("robot1", "robot2"),
        2,
    )
    assert (cam.pre_delay, cam.post_delay, cam.respawn, cam.respawn_delay) == (0.5, 0.25, True, 3.0)
    assert dict(cam.env) == {"CAMERA": "front", "GAIN": "1.5", "DROP": None}
    assert cam.cwd == "~/robot"
    log = config.node("logger")
    assert log.shell is True and log.required is True and log.respawn is False
    assert [n.name for n in config.nodes] == ["camera", "logger"]  # file order = start order
    assert node_argv(log, "h:1") == [
        "/bin/sh",
        "-c",
        "python log.py | tee log.txt --name logger --coordinator h:1",
    ]


def test_defaults():
    config = parse_config("nodes:\n  a: {command: x}\n")
    c = config.coordinator
    assert (c.host, c.client_host, c.port, c.authkey, c.disabled) == (
        "",
        "localhost",
        6374,
        None,
        False,
    )
    a = config.node("a")
    assert (a.shell, a.number, a.respawn, a.required, a.respawn_delay) == (
        True,
        1,
        False,
        False,
        1.0,
    )
    b = parse_config("nodes:\n  b: {command: [x, y]}\n").node("b")
    assert b.shell is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodes:\n  cam:\n    number: 2\n",
            "<t>:3: nodes.cam.command: missing; every node needs a command",
        ),
        (
            "nodes:\n  cam:\n    command: x\n    respwan: true\n",
            "<t>:4: nodes.cam.respwan: unknown key (did you mean 'respawn'?)",
        ),
        (
            "nodes:\n  cam: {command: x, number: three}\n",
            "<t>:2: nodes.cam.number: expected a whole number from 1 to 1000, got a string 'three'",
        ),
        ("nodes:\n  cam: {command: x, number: 0}\n", "nodes.cam.number: expected a whole number"),
        (
            "nodes:\n  cam: {command: x, pre_delay: -1}\n",
            "nodes.cam.pre_delay: expected a number of seconds >= 0, got a number -1",
        ),
        (
            "nodes:\n  cam: {command: x, respawn: true, required: true}\n",
            "nodes.cam: 'respawn' and 'required' cannot both be true",
        ),
        (
            "nodes:\n  cam: {command: x, on_host: yes}\n",
            "nodes.cam.on_host: expected a host name (a string) or a list of them, got a boolean True",
        ),
        (
            "nodes:\n  cam: {command: [x, null]}\n",
            "nodes.cam.command[1]: expected a string or a number, got nothing None (quote it)",
        ),
        ("nodes:\n  cam: {command: []}\n", "nodes.cam.command: expected a non-empty list"),
        ("nodes:\n  cam: {command: x, env: [A=1]}\n", "nodes.cam.env: expected a mapping"),
        ("nodes:\n  cam: {command: x, env: {A: [1]}}\n", "nodes.cam.env.A: expected a string"),
        ("nodes:\n  cam: {command: x, shell: maybe}\n", "nodes.cam.shell: expected true or false"),
        (
            "nodes:\n  cam:\n",
            "<t>:2: nodes.cam: expected a mapping with at least 'command', missing",
        ),
        ("nodes:\n  off: {command: x}\n", "quote the name"),
        (
            "nodes:\n  a: {command: x}\n  a: {command: y}\n",
            "<t>:3:3: not valid YAML: while reading a mapping; found duplicate key 'a' (first on line 2)",
        ),
        ("nodes:\n  a: {command: [x\n", "<t>:3:1: not valid YAML"),
        (
            "coordinator: {port: 70000}\nnodes: {}\n",
            "<t>:1: coordinator.port: expected a whole number from 0 to 65535",
        ),
        (
            "coordinator: {authkey: 1234}\nnodes: {}\n",
            "coordinator.authkey: expected a non-empty string, got a number 1234",
        ),
        (
            "coordinator: {prot: 1}\nnodes: {}\n",
            "coordinator.prot: unknown key (did you mean 'port'?)",
        ),
        ("coordinator: true\nnodes: {}\n", "coordinator: expected a mapping of settings"),
        ("nodes: {}\nnode: {}\n", "<t>:2: node: unknown key (did you mean 'nodes'?)"),
        ("coordinator: {}\n", "nodes: missing; expected a mapping of node name to its settings"),
        ("nodes: [a, b]\n", "nodes: expected a mapping of node name to its settings, got a list"),
        ("", "empty; expected a mapping with a 'nodes' key"),
        ("- a\n", "expected a mapping with a 'nodes' key, got a list"),
    ],
)
def test_bad_files_name_the_line_key_and_expectation(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="<t>")
    assert expected in str(info.value)


def test_every_problem_is_reported_at_once():
    text = "nodes:\n  a: {number: 2}\n  b: {command: x, colour: red}\n  c: {command: x, cwd: 3}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="f.yaml")
    assert len(info.value.problems) == 3
    assert str(info.value).startswith("3 problems:")


def test_plan_errors(tmp_path):
    text = f"""\
coordinator: {{port: 0}}
nodes:
  a: {{command: {fake()}, cwd: no-such-folder}}
  b: {{command: [no-such-program-xyz]}}
  c: {{command: [./not-there.sh]}}
  d: {{command: "no-such-program-xyz | cat"}}
"""
    path = tmp_path / "launch.yaml"
    path.write_text(text)
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        make_plan(config, exclude=["zz"], no_coordinator=True)
    problems = "\n".join(info.value.problems)
    assert "--exclude zz: no node of that name" in problems and "(nodes: a, b, c, d)" in problems
    assert f"{path}:3: nodes.a.cwd: no such folder: {tmp_path / 'no-such-folder'}" in problems
    assert (
        f"{path}:4: nodes.b.command: program 'no-such-program-xyz' not found on the PATH"
        in problems
    )
    assert "nodes.c.command: program './not-there.sh' is not an executable file" in problems
    assert "nodes.d" not in problems  # a shell command is the shell's business
    assert "coordinator.port: 0 (pick a free port) needs the coordinator to be started" in problems
    # with the coordinator started here and the bad nodes left out, the plan is fine
    plan = make_plan(config, exclude=["a", "b", "c"])
    assert plan.start_coordinator and [n.name for n in plan.nodes] == ["d"]


def _cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "easymesh.cli.launch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_bad_file_exits_2_and_starts_nothing(tmp_path):
    path = tmp_path / "launch.yaml"
    path.write_text(f"nodes:\n  a: {{command: {fake()}}}\n  b: {{number: 2}}\n")
    result = _cli(str(path))
    assert result.returncode == 2
    assert f"{path}:3: nodes.b.command: missing" in result.stderr
    assert "nothing was started" in result.stderr
    assert result.stdout == ""


def test_cli_default_file_check_and_help(tmp_path):
    missing = _cli(cwd=str(tmp_path))
    assert missing.returncode == 2 and "launch.yaml: no such launch file" in missing.stderr
    (tmp_path / "launch.yaml").write_text(
        f"coordinator: {{authkey: hush}}\nnodes:\n  a: {{command: {fake()}, number: 2}}\n"
    )
    check = _cli("--check", cwd=str(tmp_path))
    assert check.returncode == 0, check.stderr
    assert "a#2: " in check.stdout and "--name a --coordinator localhost:6374" in check.stdout
    assert "key: given to the coordinator and every node in EASYMESH_AUTHKEY" in check.stdout
    assert "hush" not in check.stdout and "--authkey" not in check.stdout
    helped = _cli("--help")
    assert helped.returncode == 0
    for option in ("--no-coordinator", "--exclude=NODE", "-e NODE", "--grace", "--check"):
        assert option in helped.stdout
    assert _cli("--grace=soon", "x.yaml").returncode == 2
