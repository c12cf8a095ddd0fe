"""Configuration of the labelling round trip: the model's classes, Label Studio, and how a labelling tool
reaches the images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

from pydantic import Field, model_validator

from agent.link.config import credential_path
from agent.strict import StrictModel


class LabelStudioConfig(StrictModel):
    """A running Label Studio (its own service and environment; we talk to its REST API)."""

    url: str = Field(default="http://127.0.0.1:8080", description="Base URL of Label Studio.")
    token: Optional[str] = Field(
        default=None, description="API token; prefer `!credential NAME` or token_file over a literal."
    )
    token_file: Optional[Path] = Field(
        default=None, description="File holding the API token; a relative path is read from $CREDENTIALS_DIRECTORY."
    )
    token_kind: Literal["auto", "legacy", "personal"] = Field(
        default="auto",
        description="legacy: sent as 'Authorization: Token <t>'; personal: a personal access token (JWT refresh "
        "token) exchanged at /api/token/refresh for a short-lived Bearer token; auto: personal if it looks like a "
        "JWT.",
    )
    project_title: str = Field(
        default="edge-vision-loop review", min_length=1, max_length=50, description="Project created on export."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="HTTP timeout per request.")
    import_batch: int = Field(default=500, ge=1, le=5000, description="Tasks per import request.")

    def read_token(self) -> Optional[str]:
        if self.token is not None:
            return self.token
        if self.token_file is None:
            return None
        return credential_path(self.token_file).read_text(encoding="utf-8").strip()


class ImageUrlConfig(StrictModel):
    """How the tasks name their images (the labelling tool fetches them; we never upload copies).

    - ``local_files``: Label Studio serves them from disk (``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``,
      ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` = the store directory, or ``document_root``): the tool runs
      where it can read the store's blobs.
    - ``template``: any HTTP(S) server over the blob directory or bucket, e.g.
      ``https://samples.example.com/{key}`` (``{key}`` is ``blobs/ab/<sha256>.jpg``, ``{sha256}`` too).
    - ``presigned``: pre-signed GET URLs of the S3 blob store (expiring; see store.blobs.presign_expiry_s).
    """

    mode: Literal["local_files", "template", "presigned"] = Field(default="local_files", description="See above.")
    template: Optional[str] = Field(default=None, description="URL template for mode=template.")
    document_root: Optional[Path] = Field(
        default=None,
        description="Label Studio's LOCAL_FILES_DOCUMENT_ROOT when it is not the store directory (mode=local_files).",
    )

    @model_validator(mode="after")
    def _template(self) -> ImageUrlConfig:
        if self.mode == "template" and not self.template:
            raise ValueError("mode template needs template")
        return self


class LabellingConfig(StrictModel):
    """The labelling round trip (``edge-trainer label ...``)."""

    classes: List[str] = Field(
        default_factory=list,
        description="Class names of the model, in class-id order (default: read from --model, else the "
        "synthetic scenes' classes).",
    )
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig, description="Label Studio.")
    image_urls: ImageUrlConfig = Field(default_factory=ImageUrlConfig, description="How tasks name images.")
    pseudo_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Teacher detections below this are not kept as pseudo-labels."
    )
