"""Configuration of the inference backends, chosen by the discriminated ``type`` field."""

from __future__ import annotations

from typing import List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

try:
    from typing import Literal
except ImportError:  # pragma: no cover
    from typing_extensions import Literal  # type: ignore[assignment]

from typing_extensions import Annotated

ProviderName = Literal["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _cpu_only() -> List[ProviderName]:
    return ["CPUExecutionProvider"]


class OnnxRuntimeConfig(BaseModel):
    """ONNX Runtime: CPU anywhere; CUDA or TensorRT execution providers where onnxruntime-gpu is installed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["onnxruntime"] = Field("onnxruntime", description="Backend selector.")
    providers: List[ProviderName] = Field(
        default_factory=_cpu_only,
        description="Execution providers in order of preference; unavailable ones are skipped with a "
        "warning, and CPU is always the last resort.",
    )
    intra_op_threads: int = Field(
        0, ge=0, le=256, description="Threads inside one operator (0: ONNX Runtime's default, all cores)."
    )
    inter_op_threads: int = Field(0, ge=0, le=256, description="Threads across operators (0: default).")
    max_batch: int = Field(4, ge=1, le=64, description="Largest batch for a model with a dynamic batch dimension.")
    graph_optimization: Literal["all", "none"] = Field(
        "all",
        description="'none': every operator as the graph defines it (a QDQ INT8 model computes its quantisation in "
        "float, with no fused integer kernel), the same on every CPU; the OTA health check's portable run and the "
        "golden recording use it. 'all': ONNX Runtime's optimised graph (what the daemon serves).",
    )
    trt_fp16: bool = Field(True, description="TensorRT EP: allow FP16 kernels.")
    trt_int8: bool = Field(False, description="TensorRT EP: INT8 (needs a calibration table or a QDQ model).")
    trt_engine_cache_dir: Optional[str] = Field(
        None, description="TensorRT EP: directory where built engines are cached between starts."
    )


class TensorRTConfig(BaseModel):
    """Native TensorRT (Jetson): builds and caches an engine from the ONNX file on first use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tensorrt"] = Field("tensorrt", description="Backend selector.")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "int8", description="Engine precision; int8 needs a calibration cache or calibration images."
    )
    engine_cache_dir: str = Field(
        "/var/lib/edge-agent/engines",
        description="Where built engines are cached, keyed by model hash, TensorRT version and GPU.",
    )
    calibration_cache: Optional[str] = Field(
        None, description="INT8 calibration cache shipped with the release (read, or written after calibrating)."
    )
    calibration_images: Optional[str] = Field(
        None, description="Folder of calibration images, used when no usable calibration cache exists."
    )
    workspace_mb: int = Field(1024, ge=64, le=65536, description="Builder workspace memory pool, MiB.")
    max_batch: int = Field(4, ge=1, le=64, description="Largest batch the engine's optimisation profile accepts.")
    dla_core: Optional[int] = Field(
        None, ge=0, le=1, description="Run on this DLA core (Xavier/Orin) with GPU fallback; None: GPU."
    )


BackendConfig = Annotated[Union[OnnxRuntimeConfig, TensorRTConfig], Field(discriminator="type")]
