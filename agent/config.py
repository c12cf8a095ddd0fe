"""The daemon's whole configuration: one pydantic model, loaded from YAML, overridden from the environment.

Sources, in order (later wins)::

    /etc/edge-agent/config.yaml          the file (``load_config(path)``)
    EDGE_AGENT__SECTION__KEY=value       environment overrides; ``__`` separates levels, list items are
                                         addressed by index (``EDGE_AGENT__CAMERAS__0__FPS_LIMIT=5``); the
                                         value is read as a YAML scalar (``true``, ``5``, ``0.3``, text)
    !credential NAME                     a YAML tag: the value is the content of ``$CREDENTIALS_DIRECTORY/NAME``
                                         (systemd ``LoadCredential=``), trailing newline removed; an empty one
                                         is an error (the unit's ``SetCredential=NAME:`` default stands in for
                                         a missing file: the agent then says which secret is missing)

Commands that use no secret (``status``, ``ota``) load the file with ``credentials="optional"``: a credential
they cannot read (no ``$CREDENTIALS_DIRECTORY`` outside the unit, a file only root may read) is given a
stand-in value, so they still check every other key, and the file's secrets stay where they are.

Every model forbids unknown keys; a mistake is reported with the key's path, e.g.
``cameras.0.source.rtsp.urll: Extra inputs are not permitted``. Sections are the other packages' own models
(:class:`~agent.sources.config.CameraConfig`, :class:`~agent.link.config.MqttConfig`,
:class:`~agent.spool.config.SpoolConfig`, :class:`~agent.ota.config.OtaConfig`, the engine's
:data:`~agent.engine.config.BackendConfig`), so each is documented once, next to the code that uses it.

Errors::

    ConfigError               base; ``problems`` lists "path: message" lines
    └── CredentialError       a ``!credential`` could not be read
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union, cast

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from agent.box_page.config import ConsoleConfig
from agent.core.decode import DecodeParams
from agent.engine.config import BackendConfig, OnnxRuntimeConfig
from agent.link.config import MqttConfig
from agent.ota.config import ModelUpdatesConfig, OtaConfig
from agent.sources.config import CameraConfig, check_unique_names
from agent.spool.config import DiskBudgetConfig, SpoolConfig
from agent.strict import StrictModel

try:
    from typing import Literal
except ImportError:  # pragma: no cover - Python 3.7
    from typing_extensions import Literal  # type: ignore[assignment]

ENV_PREFIX = "EDGE_AGENT__"
CREDENTIAL_TAG = "!credential"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
SettingsT = TypeVar("SettingsT", bound=BaseModel)
"""A configuration file larger than this is refused before parsing (it is a few kB)."""


class ConfigError(Exception):
    """The configuration is unusable. ``problems``: one "path: message" line per problem; ``source``: file."""

    def __init__(self, problems: List[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration {source}" if source else "invalid configuration"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))


class CredentialError(ConfigError):
    """A ``!credential NAME`` could not be resolved (no ``$CREDENTIALS_DIRECTORY``, missing file, bad name)."""


class ModelConfig(StrictModel):
    """The detection model and how it runs."""

    path: Optional[Path] = Field(
        default=None,
        description="ONNX model served when OTA has no active release (the factory model); null: OTA must provide one.",
    )
    backend: BackendConfig = Field(
        default_factory=OnnxRuntimeConfig, description="Inference backend, chosen by `type`."
    )
    conf_threshold: float = Field(
        default=0.25, ge=0, le=1, description="Detections at or below this confidence are dropped (decode)."
    )
    iou_threshold: float = Field(default=0.7, ge=0, le=1, description="NMS IoU threshold.")
    max_detections: int = Field(default=100, ge=1, le=10000, description="Most boxes kept per frame.")

    def decode_params(self) -> DecodeParams:
        return DecodeParams(conf=self.conf_threshold, iou=self.iou_threshold, max_det=self.max_detections)


class LoggingConfig(StrictModel):
    """Structured logs on stderr (journald picks them up under systemd)."""

    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Lowest level logged.")
    format: Literal["json", "console"] = Field(
        default="json", description="json: one object per line (journald, log shippers); console: for people."
    )


class MetricsConfig(StrictModel):
    """Prometheus text-format endpoint (``GET /metrics``), served by a stdlib HTTP server thread."""

    enabled: bool = Field(default=False, description="Serve metrics; off by default.")
    host: str = Field(default="127.0.0.1", description="Address to bind; 0.0.0.0 exposes it on every interface.")
    port: int = Field(default=9108, ge=0, le=65535, description="TCP port (0: any free port, for tests).")


class OutputConfig(StrictModel):
    """What alerts and samples carry."""

    sample_jpeg_quality: int = Field(default=90, ge=10, le=100, description="JPEG quality of triage samples.")
    alert_snapshots: bool = Field(default=True, description="Attach a JPEG snapshot to every alert.")
    snapshot_jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality of snapshots.")
    queue_size: int = Field(
        default=64,
        ge=1,
        le=10000,
        description="Outputs (each holding its frame until encoded) queued between the rules thread and the spool "
        "writer. When full, a sample or snapshot is dropped and an alert evicts the oldest samples; all counted "
        "by kind; inference never waits on the disk.",
    )
    queue_max_mb: int = Field(
        default=128,
        ge=8,
        le=16384,
        description="Bound on the raw frames the output queue holds, MiB (a 1080p frame is 6 MiB): the count "
        "alone let 64 full frames (400 MB) pile up on an 8 GB Jetson.",
    )


class DaemonConfig(StrictModel):
    """The supervisor itself."""

    state_dir: Path = Field(
        default=Path("/var/lib/edge-agent"), description="Writable state: status.json, spool, OTA slots."
    )
    status_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between status.json writes and retained status updates."
    )
    shutdown_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="SIGTERM: everything stops within this bound (then exit anyway)."
    )
    idle_poll_s: float = Field(
        default=0.005, gt=0, le=1, description="Inference loop wait when no camera has a new frame."
    )
    health_min_fps: float = Field(
        default=0.0,
        ge=0,
        description="During OTA probation, an aggregate FPS below this (after model_updates.health_grace_s) "
        "reports the model "
        "unhealthy and rolls it back; 0 disables the check.",
    )


class AgentConfig(StrictModel):
    """Everything ``edge-agent run`` needs (see examples/config.yaml)."""

    mqtt: MqttConfig = Field(description="Site broker, device identity and topics.")
    cameras: List[CameraConfig] = Field(default_factory=list, description="Cameras, by unique name.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Detection model and backend.")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Durable outbound spool.")
    disk_budget: Optional[DiskBudgetConfig] = Field(
        default=None,
        description="One budget for spool, samples and model staging; caps spool.max_bytes when set.",
    )
    ota: Optional[OtaConfig] = Field(default=None, description="Signed model updates; null: updates disabled.")
    model_updates: ModelUpdatesConfig = Field(
        default_factory=ModelUpdatesConfig,
        description="Timings and limits of model pushes (retries, chunk stalls, probation health grace).",
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Alert and sample contents.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logs.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus endpoint.")
    console: ConsoleConfig = Field(
        default_factory=ConsoleConfig, description="The box page (commissioning, preview, commands); off by default."
    )
    daemon: DaemonConfig = Field(default_factory=DaemonConfig, description="Supervisor settings.")

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: List[CameraConfig]) -> List[CameraConfig]:
        return check_unique_names(cameras)

    def spool_config(self) -> SpoolConfig:
        """The spool's configuration with the disk budget applied (the smaller byte limit wins)."""
        if self.disk_budget is None:
            return self.spool
        from agent.spool.budget import DiskBudget

        allowed = DiskBudget(self.disk_budget).allocation().spool_bytes
        return self.spool.model_copy(update={"max_bytes": max(1024, min(self.spool.max_bytes, allowed))})


# ------------------------------------------------------------------------------------------------ loading


CREDENTIALS_SOURCE = Path("/etc/edge-agent/credentials")
"""Where the shipped units load the agent's credentials from (``LoadCredential=NAME:/etc/edge-agent/credentials/
NAME``): named in the messages that tell the operator what to put where."""

CredentialMode = Literal["required", "optional"]


def _credentials_dir() -> Path:
    base = os.environ.get("CREDENTIALS_DIRECTORY")
    if not base:
        raise CredentialError([f"{CREDENTIAL_TAG} used but $CREDENTIALS_DIRECTORY is not set"])
    return Path(base)


def _missing_hint(name: str, source: Optional[Path]) -> str:
    where = f"write it to {source / name} (root, mode 0600)" if source is not None else "write it to the file"
    return (
        f"credential {name} is empty: the unit's LoadCredential={name}: file is missing or empty; "
        f"{where}, then restart the service"
    )


def read_credential(name: str, source: Optional[Path] = None) -> str:
    """The content of credential ``name`` from ``$CREDENTIALS_DIRECTORY`` (trailing newline removed).

    An empty credential is an error: systemd hands the unit's empty ``SetCredential=`` default over when the
    file ``LoadCredential=`` names is missing, and a secret is never empty. ``source``: the directory the
    unit loads credentials from, named in that error (:data:`CREDENTIALS_SOURCE` for the agent).
    """
    if not name or "/" in name or name in (".", ".."):
        raise CredentialError([f"{CREDENTIAL_TAG} {name!r}: a credential name is one path component"])
    path = _credentials_dir() / name
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        hint = ""
        if isinstance(exc, FileNotFoundError) and source is not None:
            hint = f" (the unit loads no credential {name}: add LoadCredential={name}:{source / name} with " + (
                "`systemctl edit`)"
            )
        raise CredentialError([f"{CREDENTIAL_TAG} {name}: cannot read {path}: {exc.strerror}{hint}"]) from exc
    if not value.strip():
        raise CredentialError([f"{CREDENTIAL_TAG} {name}: {_missing_hint(name, source)}"])
    return value


def credential_file_problems(config: AgentConfig, source: Optional[Path] = CREDENTIALS_SOURCE) -> List[str]:
    """The secrets the configuration names by a relative path (``mqtt.password_file``, ``mqtt.tls.key_file``:
    files in ``$CREDENTIALS_DIRECTORY``) that are missing or empty, one "path: reason" line each.

    ``edge-agent run`` checks them before it starts: the MQTT link would otherwise fail at every connection
    attempt with an empty password or key, which reads as a broker problem.
    """
    named: List[Tuple[str, Path]] = []
    if config.mqtt.password_file is not None:
        named.append(("mqtt.password_file", config.mqtt.password_file))
    if config.mqtt.tls is not None and config.mqtt.tls.key_file is not None:
        named.append(("mqtt.tls.key_file", config.mqtt.tls.key_file))
    problems = []
    for key, path in named:
        if path.is_absolute():
            continue  # the operator's own file, readable or not as they chose
        base = os.environ.get("CREDENTIALS_DIRECTORY")
        if not base:
            problems.append(f"{key}: {path} is relative (a credential) but $CREDENTIALS_DIRECTORY is not set")
            continue
        try:
            empty = not (Path(base) / path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{key}: cannot read credential {path}: {exc.strerror}")
            continue
        if empty:
            problems.append(f"{key}: {_missing_hint(str(path), source)}")
    return problems


class _Credential:
    """Placeholder left by the YAML loader; resolved after parsing so errors carry the key path."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Loader(yaml.SafeLoader):
    """SafeLoader plus ``!credential``; duplicate keys are errors (a silent override hides mistakes)."""


def _credential_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> _Credential:
    return _Credential(str(loader.construct_scalar(node)))


def _mapping_constructor(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: Dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = cast(Any, loader).construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # `? {a: 1}: x` (found by fuzzing: it escaped as a TypeError)
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a scalar (line {mark.line + 1})", mark
            )
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen[key] = cast(Any, loader).construct_object(value_node, deep=deep)
    return seen


_Loader.add_constructor(CREDENTIAL_TAG, _credential_constructor)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_constructor)


# Values a command that uses no secret validates in place of a credential it cannot read: the first plain text,
# then the URL forms camera sources require (their patterns), tried in turn for that key alone.
STAND_INS = (
    "credential-not-read",
    "rtsp://credential-not-read.invalid/",
    "http://credential-not-read.invalid/",
)


class _Resolver:
    """Replaces ``!credential`` placeholders by their values; records the keys given a stand-in instead."""

    def __init__(self, mode: CredentialMode, source: Optional[Path]) -> None:
        self.mode = mode
        self.source = source
        self.problems: List[str] = []
        self.stand_ins: Dict[Tuple[str, ...], str] = {}  # key path -> credential name

    def resolve(self, value: Any, path: Tuple[str, ...]) -> Any:
        if isinstance(value, _Credential):
            try:
                return read_credential(value.name, self.source)
            except CredentialError as exc:
                if self.mode == "optional":
                    self.stand_ins[path] = value.name
                    return STAND_INS[0]
                dotted = ".".join(path)
                self.problems.extend(f"{dotted}: {p}" for p in exc.problems)
                return None
        if isinstance(value, dict):
            return {k: self.resolve(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, (*path, str(i))) for i, v in enumerate(value)]
        return value


def _stand_in_key(location: Tuple[Any, ...], stand_ins: Dict[Tuple[str, ...], str]) -> Optional[Tuple[str, ...]]:
    """The stand-in key an error is about: its path, read through the union tags pydantic adds to a location
    (``cameras.0.source.rtsp.url`` for the key ``cameras.0.source.url``)."""
    parts = [str(p) for p in location]
    for key in stand_ins:
        rest = iter(parts)  # the key's parts, in order, within the location's (a subsequence)
        if parts and parts[-1] == key[-1] and all(any(p == k for p in rest) for k in key):
            return key
    return None


def _set_path(data: Any, path: Tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def _parse_scalar(text: str) -> Any:
    """An override value read as YAML (``5``, ``true``, ``[a, b]``), or the raw text when it is not YAML."""
    if not text.strip():
        return text
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def apply_env_overrides(data: Dict[str, Any], environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> List[str]:
    """Apply ``EDGE_AGENT__A__B=value`` (``prefix`` + path) to ``data`` in place; returns the variables applied."""
    applied: List[str] = []
    for name in sorted(environ):
        if not name.startswith(prefix):
            continue
        parts = [p.lower() for p in name[len(prefix) :].split("__")]
        if not parts or any(not p for p in parts):
            raise ConfigError([f"{name}: empty level in the variable name"])
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError([f"{name}: {'.'.join(parts[: depth + 1])}: no such list item"])
                key: Union[int, str] = int(part)
            elif isinstance(node, dict):
                key = part
            else:
                raise ConfigError([f"{name}: {'.'.join(parts[:depth])} is not a section"])
            if last:
                node[key] = _parse_scalar(environ[name])
            else:
                if isinstance(node, dict) and key not in node:
                    node[key] = {}
                node = node[key]
        applied.append(name)
    return applied


def format_validation_error(exc: ValidationError) -> List[str]:
    """One "dotted.path: message" line per error (the key's path, as the operator wrote it)."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ())) or "(top level)"
        lines.append(f"{location}: {error.get('msg', 'invalid')}")
    return lines


def parse_settings(
    data: Any,
    model: Type[SettingsT],
    source: str = "",
    environ: Optional[Mapping[str, str]] = None,
    env_prefix: str = ENV_PREFIX,
    credentials: CredentialMode = "required",
    credential_source: Optional[Path] = None,
) -> SettingsT:
    """Validate already-parsed YAML (``dict``) as ``model`` after environment overrides and credentials.

    The one loader of the agent's and the cloud services' configuration files (each with its own model and
    environment prefix), so both read YAML, ``!credential`` and overrides the same way. ``credentials``:
    ``required`` (a service: every credential must be there and not empty) or ``optional`` (a command that
    uses none: unreadable ones get a stand-in, see the module docstring). ``credential_source``: the
    directory the unit loads them from, named in the error about an empty one.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping, got {type(data).__name__}"], source)
    apply_env_overrides(data, os.environ if environ is None else environ, env_prefix)
    resolver = _Resolver(credentials, credential_source)
    data = resolver.resolve(data, ())
    if resolver.problems:
        raise CredentialError(resolver.problems, source)
    tried = dict.fromkeys(resolver.stand_ins, 0)
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            keys = [_stand_in_key(tuple(error.get("loc", ())), resolver.stand_ins) for error in errors]
            if not errors or None in keys:
                raise ConfigError(format_validation_error(exc), source) from None
            for key in dict.fromkeys(k for k in keys if k is not None):
                tried[key] += 1
                if tried[key] >= len(STAND_INS):
                    name = resolver.stand_ins[key]
                    raise CredentialError(
                        [f"{'.'.join(key)}: {CREDENTIAL_TAG} {name} cannot be read by this command"], source
                    ) from None
                _set_path(data, key, STAND_INS[tried[key]])


def loads_settings(
    text: str,
    model: Type[SettingsT],
    source: str = "<string>",
    environ: Optional[Mapping[str, str]] = None,
    env_prefix: str = ENV_PREFIX,
    credentials: CredentialMode = "required",
    credential_source: Optional[Path] = None,
) -> SettingsT:
    """Parse YAML text as ``model`` (see :func:`load_settings`)."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"YAML: {exc}"], source) from None
    return parse_settings(data, model, source, environ, env_prefix, credentials, credential_source)


def load_settings(
    path: Union[str, Path],
    model: Type[SettingsT],
    environ: Optional[Mapping[str, str]] = None,
    env_prefix: str = ENV_PREFIX,
    credentials: CredentialMode = "required",
    credential_source: Optional[Path] = None,
) -> SettingsT:
    """Read, override and validate a configuration file as ``model``.

    Raises:
        ConfigError: unreadable, too large, not YAML, or invalid (every problem listed with its key path).
        CredentialError: a ``!credential`` could not be read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"file is {size} bytes, above the {MAX_CONFIG_BYTES} byte limit"], str(path))
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 at byte {exc.start}"], str(path)) from None
    return loads_settings(text, model, str(path), environ, env_prefix, credentials, credential_source)


def parse_config(data: Any, source: str = "", environ: Optional[Mapping[str, str]] = None) -> AgentConfig:
    """Validate already-parsed YAML (``dict``) after environment overrides and credential resolution."""
    return parse_settings(data, AgentConfig, source, environ, credential_source=CREDENTIALS_SOURCE)


def loads_config(text: str, source: str = "<string>", environ: Optional[Mapping[str, str]] = None) -> AgentConfig:
    """Parse YAML text into an :class:`AgentConfig` (see :func:`load_config`)."""
    return loads_settings(text, AgentConfig, source, environ, credential_source=CREDENTIALS_SOURCE)


class OtaCommandConfig(AgentConfig):
    """What ``edge-agent ota ...`` reads: the same file, every section validated as for ``run``, except that a box
    updated only by hand or from USB sticks needs no ``mqtt`` section."""

    # pydantic allows a subclass to widen a field; mypy sees an incompatible override
    mqtt: Optional[MqttConfig] = Field(  # type: ignore[assignment]
        default=None, description="Site broker (unused by the ota commands; optional here)."
    )


DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/config.yaml")


def add_config_argument(parser: Any, purpose: str = "", default: Any = None) -> None:
    """The one ``--config`` option of ``run``, ``status`` and ``ota``: $EDGE_AGENT_CONFIG, else the default path."""
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(os.environ.get("EDGE_AGENT_CONFIG", str(DEFAULT_CONFIG_PATH))) if default is None else default,
        help=f"Configuration file{purpose} (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG_PATH}).",
    )


def load_config(
    path: Union[str, Path], environ: Optional[Mapping[str, str]] = None, credentials: CredentialMode = "required"
) -> AgentConfig:
    """Read, override and validate the agent's configuration file (see :func:`load_settings`)."""
    return load_settings(path, AgentConfig, environ, credentials=credentials, credential_source=CREDENTIALS_SOURCE)


__all__ = [
    "CREDENTIALS_SOURCE",
    "AgentConfig",
    "ConfigError",
    "CredentialError",
    "DaemonConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "OtaCommandConfig",
    "OutputConfig",
    "apply_env_overrides",
    "credential_file_problems",
    "format_validation_error",
    "load_config",
    "load_settings",
    "loads_config",
    "loads_settings",
    "parse_config",
    "parse_settings",
    "read_credential",
]
