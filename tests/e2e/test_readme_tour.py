"""The README's five-minute tour, run command by command as the README shows it.

The commands are read from README.md (every ``sh`` block under the tour's
heading), so changing the tour changes what this test runs: a README that no
longer works fails here. What the test changes, and only through the
environment or plain substitutions it asserts are there: free ports instead of
11112 and 8000, the data in a temp dir (and the test's database), the virtualenv
this test runs in instead of ``.venv/bin/``. ``dicom-node serve`` is started in
the background, as the README's second terminal; every other command runs in
one bash (so ``$TOKEN`` and friends carry over, as in the reader's terminal),
with ``pipefail``, and must exit 0. The key outputs are checked per step, and
every step the test expects must still be in the tour.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, clean_env, dcmtk_tool, free_port, require

README = REPO / "README.md"
TOUR_HEADING = "## Five-minute tour"
README_DICOM = "127.0.0.1 11112"
README_HTTP = "127.0.0.1:8000"
# how long the tour's node may take to put the images on the reading worklist:
# the stability wait the README sets (5 s) plus one job interval (10 s), with room
WORKLIST_DEADLINE = 90.0


def tour_commands(text: str) -> list[str]:
    """The shell commands of the tour's ``sh`` blocks, in order: comment lines
    dropped, backslash-continued lines joined."""
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    section = text[start : end if end >= 0 else len(text)]
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```$", section, re.DOTALL | re.MULTILINE):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1]
                continue
            commands.append((pending + line).strip())
            pending = ""
        assert not pending, f"a tour block ends in a continuation: {pending!r}"
    return commands


@dataclass
class Expectation:
    """A step the tour must contain (``matches`` its command) and what it prints."""

    name: str
    matches: str
    output: tuple[str, ...] = ()
    # the outputs must appear in this order (the worklist: most urgent first)
    in_order: bool = False
    # re-run until the output shows up (the stability wait), else run once
    until_deadline: float | None = None
    ran: int = field(default=0)


def expectations() -> list[Expectation]:
    return [
        Expectation("demo", r"dicom-node demo", ("demo.rad1", "demo.auditor", "radiologist")),
        Expectation(
            "modality worklist",
            r"^/usr/bin/findscu -W ",
            ("DEMOACC0001", "DEMOACC0003"),
        ),
        Expectation("send the samples", r"^/usr/bin/storescu "),
        Expectation("sign in", r"^TOKEN=\$\(curl .*/api/auth/token"),
        Expectation(
            "reading worklist",
            r"^curl .*/api/worklist ",
            ("stat DEMOACC0003", "urgent DEMOACC0001", "routine DEMOACC0002"),
            in_order=True,
            until_deadline=WORKLIST_DEADLINE,
        ),
        Expectation("claim", r"/api/worklist/\$ITEM/claim"),
        Expectation("submit", r"/api/reports/\$REPORT/submit", ("in_review",)),
        Expectation("finalize", r"/api/reports/\$REPORT/finalize", ("final",)),
        Expectation(
            "referrer reads",
            r"^curl .*Bearer \$REFERRER.*/api/reports/\$REPORT",
            ("final", "Normal study."),
        ),
        Expectation(
            "study query",
            r"^/usr/bin/findscu -S ",
            ("DEMOACC0001", "DEMOACC0002", "DEMOACC0003", "DEMOACC0099"),
        ),
        Expectation(
            "dicomweb search",
            r"^curl .*/dicomweb/studies\?ModalitiesInStudy=CT",
            ("DEMOACC0001 CT CHEST WITH CONTRAST", "DEMOACC0003 CT HEAD"),
        ),
        Expectation("dicomweb study uid", r"^STUDY_UID=\$\(curl .*/dicomweb/studies\?"),
        Expectation(
            "dicomweb thumbnail",
            r"^curl .*/dicomweb/studies/\$STUDY_UID/thumbnail",
            ("200 image/jpeg",),
        ),
        Expectation(
            "graphql worklist",
            r"^curl .*/graphql ",
            # the STAT item was reported in steps 6 and 7: the other two, most urgent first
            ("URGENT DEMOACC0001 DOE^JANE", "ROUTINE DEMOACC0002 SMITH^JOHN^A"),
            in_order=True,
        ),
    ]


class TourShell:
    """One bash for the tour's commands, like the reader's terminal: variables
    set by one command are there for the next."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self._dir = workdir
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self._steps = 0
        self._send("set -o pipefail\n")

    def _send(self, text: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(text)
        self._process.stdin.flush()

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Run one command in the shell; its exit code and its output (stdout and stderr)."""
        self._steps += 1
        script = self._dir / f"step{self._steps}.sh"
        out = self._dir / f"step{self._steps}.out"
        script.write_text(command + "\n")
        marker = f"__tour_step_{self._steps}_done"
        # source: the command runs in this shell, so its assignments persist
        self._send(f'{{ source "{script}"; }} >"{out}" 2>&1 </dev/null; echo "{marker} $?"\n')
        line = self._read_line(marker, timeout)
        return int(line.split()[-1]), out.read_text(errors="replace")

    def _read_line(self, marker: str, timeout: float) -> str:
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=deadline - time.monotonic()):
                    break
                line = self._process.stdout.readline()
                if not line:
                    break
                if line.startswith(marker):
                    return line
        raise AssertionError(f"the tour's shell did not finish {marker} in {timeout} s")

    def close(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)


class TourNode:
    """The tour's ``dicom-node serve`` command, in the background (the second terminal)."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_until_running(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("running (SIGINT or SIGTERM to stop)" in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("the tour's node did not start:\n" + "".join(self.lines))

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def tour_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    for tool in ("curl", "jq"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (apt-get install {tool})")
    dcmtk_tool("storescu")
    dcmtk_tool("findscu")
    venv_bin = Path(sys.executable).parent
    require((venv_bin / "dicom-node").exists(), f"no dicom-node script in {venv_bin}")
    env = clean_env(
        tmp_path,
        database_url=db_url,
        dicom_port=str(free_port()),
        http_port=str(free_port()),
    )
    env["TCP_NODELAY"] = "1"  # DCMTK: no 40 ms Nagle stalls per request
    return env


def localize(command: str, env: dict[str, str]) -> str:
    """The README's command for this test's node: its ports and this virtualenv."""
    venv_bin = str(Path(sys.executable).parent)
    command = re.sub(r"(?<![\w/.])\.venv/bin/", venv_bin + "/", command)
    command = command.replace(README_DICOM, f"127.0.0.1 {env['DICOM_NODE_DICOM_PORT']}")
    return command.replace(README_HTTP, f"127.0.0.1:{env['DICOM_NODE_HTTP_PORT']}")


def test_the_readme_tour_parses_into_the_steps_it_describes() -> None:
    commands = tour_commands(README.read_text(encoding="utf-8"))
    assert sum("dicom-node serve" in command for command in commands) == 1
    for expected in expectations():
        assert any(re.search(expected.matches, c) for c in commands), (
            f"the tour has no step {expected.name!r} any more: update this test with it"
        )
    # the ports this test substitutes are the ones the tour uses
    assert any(README_DICOM in command for command in commands)
    assert any(README_HTTP in command for command in commands)


def test_every_command_of_the_readme_tour_works(tour_env: dict[str, str], tmp_path: Path) -> None:
    commands = tour_commands(README.read_text(encoding="utf-8"))
    expected = expectations()
    steps = tmp_path / "steps"
    steps.mkdir()
    shell = TourShell(steps, tour_env)
    node: TourNode | None = None
    try:
        for readme_command in commands:
            command = localize(readme_command, tour_env)
            if "dicom-node serve" in command:
                node = TourNode(command, tour_env)
                node.wait_until_running()
                continue
            step = next((e for e in expected if re.search(e.matches, readme_command)), None)
            wait = step.until_deadline if step and step.until_deadline else 0.0
            deadline = time.monotonic() + wait
            while True:
                code, output = shell.run(command)
                assert code == 0, f"{readme_command}\nexited {code}:\n{output}"
                missing = [text for text in (step.output if step else ()) if text not in output]
                if not missing:
                    break
                # only the worklist waits (for the stability wait), on its condition
                assert step is not None and time.monotonic() < deadline, (
                    f"{readme_command}\ndid not print {missing}:\n{output}"
                )
                time.sleep(0.5)
            if step is not None:
                step.ran += 1
                if step.in_order:
                    places = [output.index(text) for text in step.output]
                    assert places == sorted(places), f"{readme_command}\nout of order:\n{output}"
        assert node is not None, "the tour never started the node"
        not_run = [e.name for e in expected if not e.ran]
        assert not not_run, f"tour steps not found in README.md: {not_run}"
        # what the tour's variables hold after the last command
        code, report = shell.run('printf "%s" "$REPORT"')
        assert code == 0 and report.strip().isdigit()
        # the API documentation pages the tour points to, with their assets from the node
        http = f"http://127.0.0.1:{tour_env['DICOM_NODE_HTTP_PORT']}"
        # (and the web application's: "/" sends a browser without a session to its form)
        for page in ("/docs", "/redoc", "/"):
            answer = httpx.get(http + page, timeout=10, follow_redirects=True)
            assert answer.status_code == 200, page
            assert "https://" not in answer.text, page  # nothing loaded from elsewhere
        assert node.stop() == 0, "".join(node.lines)
        node = None
    finally:
        shell.close()
        if node is not None:
            node.stop()
