"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODULES = ("hosp", "icu", "ed", "note")


def modules_of(root: Path, modules=MODULES) -> dict[str, Path]:
    """The module directories of a MIMIC-IV-shaped folder, as MimicReader takes them."""
    return {m: root / m for m in modules}


REPO = Path(__file__).resolve().parents[1]

# A small instruction set (60 patients, short prompts) that synthesize.py and train.py both resolve to.
SMALL_DATA = (
    "task_mix=smoke",
    "data.synthetic.n_patients=60",
    "model.tokenizer_patients=40",
    "model.max_input_tokens=384",
    "selection.min_events=2",
    "progress=false",
)


def compose_config(name: str, *overrides: str):
    """``conf/<name>.yaml`` composed with overrides, as the entry point would."""
    from hydra import compose, initialize_config_dir

    from ehrr1.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def backend(name: str, model_dir, **settings):
    """The backend ``evaluate.py backend=<name>`` builds for the weights in ``model_dir`` (their settings: a
    stage's stored config, else the schema's; ``dtype`` too), through the one construction path."""
    from ehrr1.backends import backend_config, build_backend
    from ehrr1.inference import model_settings

    model, _ = model_settings(str(model_dir), dtype=settings.pop("dtype", None))
    return build_backend(backend_config(name, **settings), str(model_dir), model)


def tiny_architecture():
    """A Qwen3 shape small enough for unit tests (not the embedded model's)."""
    from ehrr1.config import ArchitectureConfig

    return ArchitectureConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        max_position_embeddings=1024,
    )


def run_entry_point(script: str, *args: str, cwd: Path, timeout: int = 600):
    """``python <repo>/<script> args...`` in a fresh process, output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def offline_wandb_run(root: Path) -> tuple[Path, bytes]:
    """The single offline W&B run under ``root/wandb`` and the bytes of all its files."""
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0], b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())


def rl_prompts(n: int, kind: str = "risk", text: str = "Sodium {i}") -> list[dict]:
    """``n`` minimal instruction records, as GRPO's prompt data reads them."""
    task, metric, target = ("T", "auroc", ["yes"]) if kind == "risk" else ("labevents", "f1", ["x"])
    return [
        {
            "messages": [{"role": "user", "content": text.format(i=i)}],
            "kind": kind,
            "task": task,
            "metric": metric,
            "target": target,
        }
        for i in range(n)
    ]


def fit_grpo(module, records: list[dict], max_steps: int, prompts_per_step: int = 2):
    """Train a GRPO module on CPU for ``max_steps`` optimiser steps, without logging or checkpoints."""
    import lightning.pytorch as pl

    from ehrr1.training.grpo import PromptDataModule

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=PromptDataModule(records, prompts_per_step, 0))
    return trainer


def kill_after_first_checkpoint(args: list[str], cwd: Path, stage_dir: Path, settle_s: float) -> None:
    """Start ``train.py args``, SIGKILL it ``settle_s`` after its first checkpoint appears, and check it had not
    finished the stage."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (stage_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage_dir / "summary.json").exists(), "the run finished before it could be killed"


@contextmanager
def one_token_server(seen: list[dict] | None = None, mode: dict | None = None) -> Iterator[str]:
    """A real local HTTP server answering ``/v1/completions`` like vLLM's one-token yes/no reply ("no", with
    its top log-probabilities); each request's JSON body is appended to ``seen``. Yields the base URL.
    ``mode`` (changed while it serves): ``{"redirect": True}`` answers 302 to another host, ``{"delay_s": x}``
    waits before answering."""
    import http.server
    import json
    import threading
    import time

    mode = {} if mode is None else mode

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if seen is not None:
                seen.append(body)
            time.sleep(mode.get("delay_s", 0))
            if mode.get("redirect"):
                self.send_response(302)
                self.send_header("Location", "http://example.com/v1/completions")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            logprobs = {"top_logprobs": [{"no": -0.2, "yes": -2.0, "maybe": -5.0}]}
            reply = json.dumps({"choices": [{"text": "no", "finish_reason": "length", "logprobs": logprobs}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
