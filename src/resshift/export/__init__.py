"""A model's networks for other runtimes: ONNX graphs plus a manifest, and an ONNX Runtime backend.

* `export_onnx(pipe, folder)` writes denoiser.onnx, encoder.onnx, decoder.onnx and manifest.json
  (`resshift export MODEL --format onnx -o DIR`); `graphs` says what each graph takes, `manifest`
  what a runtime in another language needs to run the whole chain.
* `onnx_pipeline(folder)` runs an export folder through the ordinary `ResShiftPipeline` with the three
  network calls in onnxruntime; `onnxruntime_pipeline(pipe)` does so for a loaded model through the
  cache of exports (`--backend onnxruntime`). onnxruntime is the optional extra `resshift[onnx]`.
"""

from .folder import cached_export, export_onnx
from .manifest import MANIFEST_NAME, read_manifest
from .runtime import INSTALL_HINT, onnx_pipeline, onnxruntime_pipeline, require_onnxruntime

__all__ = ["INSTALL_HINT", "MANIFEST_NAME", "cached_export", "export_onnx", "onnx_pipeline", "onnxruntime_pipeline",
           "read_manifest", "require_onnxruntime"]
