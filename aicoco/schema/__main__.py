"""``python -m aicoco.schema``: rewrite the committed schema from the models."""

from __future__ import annotations

from pathlib import Path

from aicoco.schema import FILE_NAME, output_schema, render


def main() -> None:
    target = Path(__file__).with_name(FILE_NAME)
    target.write_text(render(output_schema()), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
