"""The concepts of the synthetic world (SYNTHWORLD.md), in one place.

Everything else (sampling, drawing, captions, questions, world.json) reads these tuples, so the vocabulary a
caption or an answer may use cannot drift between modules.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
SIZES: tuple[str, ...] = ("small", "large")
MOTIONS: tuple[str, ...] = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "stays still",
    "grows",
    "shrinks",
)
BACKGROUNDS: tuple[str, ...] = ("black", "gray")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
COUNTS: tuple[str, ...] = ("one", "two")

# One-word answers of the open-ended questions: the QA head's answer vocabulary.
ANSWER_VOCABULARY: tuple[str, ...] = COLORS + SHAPES + SIZES + COUNTS + DIRECTIONS

# sRGB of each colour: saturated and far apart so yuv420p chroma subsampling at 32-64 px keeps them apart.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 40),
    "purple": (155, 60, 205),
    "white": (240, 240, 240),
}
# Background grey levels; black is lifted off 0 so the pixel noise is symmetric rather than clipped.
BACKGROUND_LEVEL: dict[str, int] = {"black": 16, "gray": 118}

# Translation of one "moves ..." phase as a unit vector in image coordinates (x right, y down).
MOVE_VECTORS: dict[str, tuple[float, float]] = {
    "moves left": (-1.0, 0.0),
    "moves right": (1.0, 0.0),
    "moves up": (0.0, -1.0),
    "moves down": (0.0, 1.0),
}
# The one-word direction of each translation (the answer to "which way does the X move?").
MOVE_DIRECTION: dict[str, str] = {
    "moves left": "left",
    "moves right": "right",
    "moves up": "up",
    "moves down": "down",
}


def vocabulary() -> dict[str, list[str]]:
    """The concept table as JSON-ready lists (written to world.json)."""
    return {
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "sizes": list(SIZES),
        "motions": list(MOTIONS),
        "backgrounds": list(BACKGROUNDS),
        "directions": list(DIRECTIONS),
        "counts": list(COUNTS),
        "answer_vocabulary": list(ANSWER_VOCABULARY),
    }
