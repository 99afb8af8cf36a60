"""The closed vocabulary every scene, caption and entity of the embedded benchmark is built from.

A closed vocabulary keeps the ground truth exact: an annotation names each attribute with one
of these words, so the stand-in (and the tests) can say precisely what an image shows.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

SCHEMA = "rare-bench/1"  # tag of every annotation in src_content; the stand-in refuses anything else

# Saturated, mutually distant colours: a 64x64 render keeps them apart.
SCENE_COLORS: dict[str, RGB] = {
    "red": (214, 39, 40),
    "orange": (250, 128, 14),
    "yellow": (236, 200, 22),
    "green": (44, 160, 44),
    "blue": (31, 90, 205),
    "purple": (140, 60, 185),
    "pink": (245, 120, 190),
    "brown": (135, 84, 50),
    "black": (28, 28, 28),
    "gray": (128, 128, 128),
}
EMBLEM_COLORS: dict[str, RGB] = {**SCENE_COLORS, "white": (250, 250, 250), "gold": (205, 165, 50)}
BACKGROUNDS: dict[str, RGB] = {
    "white": (255, 255, 255),
    "cream": (247, 238, 212),
    "pale blue": (214, 230, 250),
    "pale gray": (222, 222, 222),
}

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
SIZES: dict[str, float] = {"small": 6.5, "large": 10.5}  # radius on a 64-unit canvas

# A 3x3 grid of 64/3-unit cells; names are what a captioner would say.
CELLS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}

EMBLEM_SHAPES = ("shield", "circle", "square", "diamond", "hexagon")
EMBLEM_SYMBOLS = ("star", "cross", "crescent", "triangle", "bar", "ring")

# Fictional entities: a syllable-built proper name plus a category noun ("Veltrano Guild").
CATEGORIES = ("guild", "society", "academy", "league", "company", "orchestra",
              "observatory", "library", "brewery", "shipyard", "festival", "order")
ONSETS = ("b", "br", "d", "f", "g", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "v", "z", "th", "h", "j")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "k")
FIRST_NAMES = ("Mara", "Ivo", "Tessa", "Oren", "Lida", "Bram", "Selka", "Jovan", "Nadia", "Pell", "Rhea", "Tomas",
               "Una", "Kasim", "Edda", "Fenn", "Greta", "Hollis", "Ines", "Lorne", "Mirek", "Odile", "Piet", "Sunni")
WORD_LETTERS = "BCDFGHKLMNPRSTVZ"  # consonants for rendered words: CVC(V) strings that read as words
WORD_VOWELS = "AEIOU"
CRAFTS = ("copper lanterns", "glass bells", "river maps", "clockwork birds", "wool tapestries", "salt bread",
          "star charts", "paper kites", "silver flutes", "stone bridges", "ice sculptures", "herbal inks",
          "sailing charts", "bronze keys", "honey wine", "woven baskets", "fire drums", "moss gardens")
