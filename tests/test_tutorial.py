"""The tutorial (docs/tutorial/index.md) works: its commands are read from the page itself, so
the page is the one place they are written.

Every ``bash`` block of the page is a step. The fast test parses each ``catur`` command line
with the real CLI parser (a renamed option fails here first); the slow test runs the whole
tutorial in a temporary directory, in order, as a reader would, with three differences that
do not change what the commands do:

- ``./run demo`` runs as ``catur demo`` (``./run`` only adds the set-up, which
  ``tests/test_run_script.py`` covers, and this suite already runs inside it);
- the ports 50051 and 9464 become free ports (other processes on the machine may hold them),
  and the ``catur serve`` step runs in the background until the end;
- ``catur train-scorer`` runs in this process with a smaller validation (one cluster at one
  overcommit, two days per source): the page's command validates on the full windows, which
  takes minutes even with its one generation.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial" / "index.md"
BIN = Path(sys.executable).parent


def steps() -> list[str]:
    """The page's ``bash`` blocks, in order, continuation lines joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", TUTORIAL.read_text(), flags=re.S | re.M)
    return [block.replace("\\\n", " ") for block in blocks]


def catur_lines(step: str) -> list[list[str]]:
    """The ``catur`` (and ``./run``) command lines of a step, split as the shell would."""
    out = []
    for line in step.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] in ("catur", "./run"):
            out.append(words[1:])
    return out


def test_the_tutorial_has_every_step():
    text = "\n".join(steps())
    for command in ("./run demo", "catur evaluate", "catur train-scorer", "catur serve", "catur place", "catur replay", "PlacementClient"):
        assert command in text, f"the tutorial lost its {command!r} step"


def test_every_tutorial_command_parses():
    from catur.cli.main import build_parser

    parser = build_parser()
    lines = [argv for step in steps() for argv in catur_lines(step)]
    assert len(lines) >= 9
    for argv in lines:
        try:
            parser.parse_args(argv)
        except SystemExit as exit:  # argparse reports the bad option on stderr
            pytest.fail(f"tutorial command does not parse (exit {exit.code}): catur {' '.join(argv)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path, monkeypatch):
    import catur.training.afterstate as afterstate
    from catur.cli.main import main

    real_train = afterstate.train_scorer

    def smaller_validation(sources, config, out, **kwargs):
        sources = [dataclasses.replace(s, val_days="18:19") for s in sources]
        return real_train(sources, dataclasses.replace(config, validation=(("amd-2s-nps4", 1.02),)), out, **kwargs)

    monkeypatch.setattr(afterstate, "train_scorer", smaller_validation)
    monkeypatch.chdir(tmp_path)
    grpc_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = None
    try:
        for step in steps():
            step = step.replace("./run demo", "catur demo").replace("50051", str(grpc_port)).replace("9464", str(metrics_port))
            if step.startswith("catur serve"):
                server = subprocess.Popen(shlex.split(step), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                deadline = time.monotonic() + 120
                while subprocess.run([BIN / "catur", "health", "--target", f"127.0.0.1:{grpc_port}"], env=env, capture_output=True).returncode:
                    assert server.poll() is None, server.stderr.read().decode()
                    assert time.monotonic() < deadline, "catur serve did not become healthy in 120 s"
                    time.sleep(0.5)
            elif step.startswith("catur train-scorer"):
                assert main(shlex.split(step)[1:]) == 0
            else:
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True)
                assert done.returncode == 0, f"step failed:\n{step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                if "PlacementClient" in step:
                    assert "vCPUs on nodes" in done.stdout
        for written in ("catur-demo/results.json", "catur-demo/defect_cdf.png", "my-trace.parquet", "eval.json",
                        "plots/defect_cdf.png", "plots/daily_defect.png", "plots/daily_anomalies.png", "models/mine/manifest.json"):
            assert (tmp_path / written).is_file(), f"the tutorial says it writes {written}"
        assert server is not None, "the tutorial lost its serve step"
        server.send_signal(signal.SIGINT)  # Ctrl-C, as the page says
        assert server.wait(timeout=60) == 0
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
