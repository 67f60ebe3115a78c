"""Build model.tar.gz for the embedding endpoint, in the layout SageMaker unpacks into /opt/ml/model.

    python sagemaker/embedding/package.py                          # weights by reference (the image has them)
    python sagemaker/embedding/package.py --weights include        # the bundled weights inside the tarball
    python sagemaker/embedding/package.py --weights include --model-path DIR --model-id org/name

The tarball holds `code/serve.py` and `code/requirements.txt` (the container runs this serve.py instead of its
own copy), `ragline-model.json` (which model: an id, and the sha256 of each weight file when they are included)
and, with `--weights include`, the sentence-transformers directory at its root. Builds are reproducible: the
same inputs give the same bytes, so an unchanged model uploads to the same S3 key (deploy.py names keys by
content). Standalone script, like serve.py: `sagemaker/` is not a package.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
CODE_FILES = ("serve.py", "requirements.txt")


def _serve() -> ModuleType:
    """serve.py, for its model resolution and manifest name (one definition of both)."""
    spec = importlib.util.spec_from_file_location("ragline_embedding_serve", HERE / "serve.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(model_id: str, weights_dir: Path | None) -> dict[str, object]:
    if weights_dir is None:
        return {"model_id": model_id, "weights": "reference"}
    files = sorted(p for p in weights_dir.rglob("*") if p.is_file())
    return {
        "model_id": model_id,
        "weights": "included",
        "files": {str(p.relative_to(weights_dir)): sha256(p) for p in files},
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed owner, mode and time: reproducible bytes.
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(output: Path, *, model_id: str, weights_dir: Path | None, manifest_name: str) -> dict[str, object]:
    """Write the tarball; returns the manifest it holds."""
    described = manifest(model_id, weights_dir)
    entries: dict[str, bytes] = {f"code/{name}": (HERE / name).read_bytes() for name in CODE_FILES}
    entries[manifest_name] = (json.dumps(described, indent=2, sort_keys=True) + "\n").encode()
    if weights_dir is not None:
        for path in sorted(p for p in weights_dir.rglob("*") if p.is_file()):
            entries[str(path.relative_to(weights_dir))] = path.read_bytes()
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        output.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(entries):
            _add(tar, name, entries[name])
    return described


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("build/embedding/model.tar.gz"))
    parser.add_argument(
        "--weights",
        choices=["reference", "include"],
        default="reference",
        help="reference: the tarball names the model and the container loads it (the bundled one, or the hub "
        "with network access); include: the weights travel in the tarball",
    )
    parser.add_argument(
        "--model-path", type=Path, help="A sentence-transformers directory (default: the bundled one)"
    )
    parser.add_argument(
        "--model-id", help="The id the manifest and the responses name (default: the bundled one)"
    )
    args = parser.parse_args(argv)

    serve = _serve()
    if args.model_path and not args.model_id:
        parser.error("--model-path needs --model-id (the name responses report)")
    model_id = args.model_id or serve.BUNDLED_MODEL_NAME
    weights_dir = None
    if args.weights == "include":
        weights_dir = args.model_path or Path(serve.bundled_model_dir())
        if not (weights_dir / "modules.json").is_file():
            parser.error(f"{weights_dir} is not a sentence-transformers directory (no modules.json)")
    described = build(args.output, model_id=model_id, weights_dir=weights_dir, manifest_name=serve.MANIFEST)
    print(
        json.dumps(
            {
                "output": str(args.output),
                "bytes": args.output.stat().st_size,
                "model_id": model_id,
                "weights": described["weights"],
                "sha256": sha256(args.output),
            }
        )
    )


if __name__ == "__main__":
    main()
