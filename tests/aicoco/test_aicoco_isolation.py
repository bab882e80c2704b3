"""``import aicoco`` needs neither the web stack nor Triton nor the image readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = (
    "starlette",
    "hypercorn",
    "tritonclient",
    "pydicom",
    "nibabel",
    "skimage",
    "onnxruntime",
    "multipart",
    "python_multipart",
    "httpx",
    "grpc",
    "PIL",
)


def test_import_and_use_without_web_or_triton_packages() -> None:
    script = textwrap.dedent(
        f"""
        import sys

        BLOCKED = {BLOCKED!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, Blocker())
        import numpy as np
        import aicoco
        from aicoco import AiImage, IdGenerator, SegmentationStrategy

        mask = np.zeros((1, 4, 4), dtype=np.uint8)
        mask[0, 1:3, 1:3] = 1
        document = SegmentationStrategy()(
            mask,
            images=[AiImage(id="a", file_name="a.png", index=0)],
            categories=[{{"name": "x"}}],
            ids=IdGenerator(seed=0),
        )
        document.to_json_bytes()
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
