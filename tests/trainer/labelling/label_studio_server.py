"""A real Label Studio for the tests: the server installed by `make setup` in its own virtualenv
(.venv-labelstudio: Label Studio pins its own Django and numpy, so it never shares the trainer's), started on
127.0.0.1 with a fresh data directory, a reviewer account, and a personal access token made the way a person
makes one (log in, Account & Settings → Personal Access Token; here through the same HTTP endpoints)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Optional
from urllib.request import HTTPCookieProcessor, Request, build_opener

from tests.agent.broker import free_port

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
EMAIL = "reviewer@example.com"
PASSWORD = "reviewer-pass-1234"


def label_studio_bin() -> Optional[Path]:
    path = Path(os.environ.get("LABEL_STUDIO_BIN", DEFAULT_BIN))
    return path if path.exists() else None


@dataclass
class LabelStudioServer:
    url: str
    token: str  # a personal access token (JWT refresh token)
    document_root: Path
    proc: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _personal_access_token(url: str) -> str:
    jar = CookieJar()
    opener = build_opener(HTTPCookieProcessor(jar))
    opener.open(f"{url}/user/login/", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, "email": EMAIL, "password": PASSWORD}).encode()
    opener.open(Request(f"{url}/user/login/", data=body, headers={"Referer": f"{url}/user/login/"}), timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    request = Request(
        f"{url}/api/token/",
        data=b"{}",
        headers={"X-CSRFToken": csrf, "Referer": f"{url}/", "Content-Type": "application/json"},
        method="POST",
    )
    text = opener.open(request, timeout=30).read().decode()
    match = re.search(r'"token"\s*:\s*"([^"]+)"', text)
    if not match:
        raise RuntimeError(f"no personal access token in {text[:200]}")
    return match.group(1)


def start_label_studio(workdir: Path, document_root: Path, timeout: float = 240.0) -> LabelStudioServer:
    binary = label_studio_bin()
    if binary is None:
        raise FileNotFoundError(f"Label Studio is not installed at {DEFAULT_BIN} (make setup installs it)")
    port = free_port()
    data = workdir / "label-studio-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = dict(
        os.environ,
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        LABEL_STUDIO_USERNAME=EMAIL,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    env.pop("PYTHONPATH", None)
    log_path = workdir / "label-studio.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(binary), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=str(workdir),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    opener = build_opener()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Label Studio exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if opener.open(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"Label Studio did not answer in {timeout} s: {log_path.read_text()[-2000:]}")
        time.sleep(1.0)
    return LabelStudioServer(url, _personal_access_token(url), document_root, proc, log_path)
