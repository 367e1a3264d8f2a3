"""The words and values clips are built from: colours, backgrounds, shapes, sizes, motions, counts, structures."""

# fmt: off
COLOURS = {  # name: (RGB, words a caption may use)
    "red": ((230, 40, 40), ("red", "crimson", "scarlet")),
    "orange": ((255, 140, 20), ("orange", "tangerine")),
    "yellow": ((250, 220, 40), ("yellow", "golden")),
    "green": ((40, 180, 70), ("green", "emerald")),
    "blue": ((50, 90, 240), ("blue", "cobalt")),
    "purple": ((160, 70, 210), ("purple", "violet")),
    "white": ((245, 245, 245), ("white", "snow-white")),
}
BACKGROUNDS = {"black": (0, 0, 0), "charcoal": (45, 45, 50), "gray": (95, 95, 95)}  # never named in captions
SHAPES = {  # name: (singular, plural) word pairs
    "circle": (("circle", "circles"), ("disc", "discs"), ("ball", "balls")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"), ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("star shape", "star shapes")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
}
SIZES = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
RADIUS = {"small": 0.13, "large": 0.22}  # circumradius as a fraction of the frame side: 8 and 14 px at 64 px
MOTIONS = {  # name: (singular, plural) verb phrases; the first pair is the canonical wording
    "left": (("moves to the left", "move to the left"), ("slides left", "slide left"),
             ("travels leftwards", "travel leftwards"), ("moves from right to left", "move from right to left")),
    "right": (("moves to the right", "move to the right"), ("slides right", "slide right"),
              ("travels rightwards", "travel rightwards"), ("moves from left to right", "move from left to right")),
    "up": (("moves up", "move up"), ("rises", "rise"), ("floats upwards", "float upwards"),
           ("travels to the top", "travel to the top")),
    "down": (("moves down", "move down"), ("falls", "fall"), ("sinks downwards", "sink downwards"),
             ("drops to the bottom", "drop to the bottom")),
    "grows": (("grows", "grow"), ("gets bigger", "get bigger"), ("expands", "expand")),
    "shrinks": (("shrinks", "shrink"), ("gets smaller", "get smaller"), ("contracts", "contract")),
    "spins": (("spins", "spin"), ("rotates", "rotate"), ("turns around", "turn around")),
    "still": (("stays still", "stay still"), ("does not move", "do not move"), ("sits motionless", "sit motionless")),
    "appears": (("appears", "appear"), ("pops up", "pop up"), ("shows up", "show up")),
    "disappears": (("disappears", "disappear"), ("vanishes", "vanish"), ("goes away", "go away")),
}
OPPOSITE_MOTION = {  # a motion twin swaps a motion for its opposite
    a: b for pair in (("left", "right"), ("up", "down"), ("grows", "shrinks"), ("appears", "disappears"),
                      ("spins", "still")) for a, b in (pair, pair[::-1])
}
# fmt: on
NUMBERS = {2: ("two", "a pair of"), 3: ("three", "a trio of")}
SPIN_DEG_PER_S = 40.0  # never a multiple of a shape's symmetry angle, so 1 fps samples show the turn
STRUCTURES = {"single": 0.35, "pair": 0.25, "sequence": 0.25, "count": 0.15}  # sampling weights
