"""The gateway's Dockerfile, read as instructions: no Docker engine runs here, so the tests of
the image (and the soak, which runs the gateway with the image's environment) read it instead of
building it."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "docker" / "gateway.Dockerfile"

Instruction = tuple[str, str]
"""(KEYWORD, arguments)."""


def read_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions, with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    if pending:
        raise ValueError(f"{path} ends in a line continuation")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by stage; each group starts with its FROM."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped
